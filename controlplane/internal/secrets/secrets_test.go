package secrets_test

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edgeward/edgeward/controlplane/internal/secrets"
)

func rawKey(t *testing.T) []byte {
	b := make([]byte, secrets.KeySize)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return b
}

func TestSealOpensOnlyInItsContext(t *testing.T) {
	k, err := secrets.NewKeyring(rawKey(t))
	require.NoError(t, err)
	sealed, err := k.Seal([]byte("whsec_value"), "row/a/secret")
	require.NoError(t, err)
	assert.False(t, bytes.Contains(sealed, []byte("whsec_value")))

	pt, err := k.Open(sealed, "row/a/secret")
	require.NoError(t, err)
	assert.Equal(t, "whsec_value", string(pt))

	_, err = k.Open(sealed, "row/b/secret")
	assert.Error(t, err, "a value moved to another row must not open")
	sealed[len(sealed)-1] ^= 1
	_, err = k.Open(sealed, "row/a/secret")
	assert.Error(t, err, "tampering must be detected")
}

func TestRotationOpensWithOlderKeys(t *testing.T) {
	oldKey, newKey := rawKey(t), rawKey(t)
	old, err := secrets.NewKeyring(oldKey)
	require.NoError(t, err)
	sealed, err := old.Seal([]byte("v"), "c")
	require.NoError(t, err)

	both, err := secrets.NewKeyring(newKey, oldKey)
	require.NoError(t, err)
	pt, err := both.Open(sealed, "c")
	require.NoError(t, err)
	assert.Equal(t, "v", string(pt))

	onlyNew, err := secrets.NewKeyring(newKey)
	require.NoError(t, err)
	_, err = onlyNew.Open(sealed, "c")
	assert.ErrorIs(t, err, secrets.ErrUnknownKey)
}

func TestLoadCreatesTheDataDirKeyOnceAndReadsReferences(t *testing.T) {
	dir := t.TempDir()
	k1, err := secrets.Load(nil, dir)
	require.NoError(t, err)
	info, err := os.Stat(filepath.Join(dir, secrets.DefaultKeyFile))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), info.Mode().Perm())
	sealed, err := k1.Seal([]byte("x"), "c")
	require.NoError(t, err)
	k2, err := secrets.Load(nil, dir)
	require.NoError(t, err)
	_, err = k2.Open(sealed, "c")
	require.NoError(t, err, "a restart must open what it sealed before")

	encoded := base64.StdEncoding.EncodeToString(rawKey(t))
	t.Setenv("EDGEWARD_TEST_SECRETS_KEY", encoded)
	_, err = secrets.Load([]string{"env:EDGEWARD_TEST_SECRETS_KEY"}, "")
	require.NoError(t, err)

	_, err = secrets.Load([]string{"env:EDGEWARD_TEST_UNSET_VARIABLE"}, "")
	assert.ErrorContains(t, err, "not set")
	t.Setenv("EDGEWARD_TEST_SHORT_KEY", "c2hvcnQ=")
	_, err = secrets.Load([]string{"env:EDGEWARD_TEST_SHORT_KEY"}, "")
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "c2hvcnQ=", "an error never repeats the key")
	_, err = secrets.Load([]string{"plain-value"}, "")
	assert.ErrorContains(t, err, "env:NAME or file:PATH")
}
