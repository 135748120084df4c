//go:build unix

package pgcluster

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMissingBinariesSayWhatToInstall(t *testing.T) {
	saved := binGlobs
	t.Cleanup(func() { binGlobs = saved })
	binGlobs = []string{filepath.Join(t.TempDir(), "nothing-*", "bin")}
	t.Setenv("PATH", t.TempDir())

	_, err := FindBinDir()
	require.ErrorIs(t, err, ErrNoBinaries)
	_, err = Ensure(context.Background(), t.TempDir(), Options{})
	require.ErrorIs(t, err, ErrNoBinaries)
	for _, want := range []string{"apt-get install -y postgresql", "brew install postgresql", "DATABASE_URL"} {
		assert.Contains(t, err.Error(), want)
	}
}

func TestFindsTheNewestVersion(t *testing.T) {
	saved := binGlobs
	t.Cleanup(func() { binGlobs = saved })
	root := t.TempDir()
	for _, v := range []string{"9.6", "15", "16"} {
		dir := filepath.Join(root, v, "bin")
		require.NoError(t, os.MkdirAll(dir, 0o755))
		for _, b := range []string{"initdb", "pg_ctl"} {
			require.NoError(t, os.WriteFile(filepath.Join(dir, b), nil, 0o755))
		}
	}
	binGlobs = []string{filepath.Join(root, "*", "bin")}
	t.Setenv("PATH", t.TempDir())
	dir, err := FindBinDir()
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(root, "16", "bin"), dir)
}
