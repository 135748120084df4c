package identity

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// testCA issues certificates like the control plane does.
type testCA struct {
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
	n    int64
}

func newCA(t *testing.T) *testCA {
	key, err := NewKey()
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ca"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return &testCA{key: key, cert: cert, n: 1}
}

// issue signs a certificate for key; later calls get later NotBefore.
func (ca *testCA) issue(t *testing.T, key *ecdsa.PrivateKey) []byte {
	ca.n++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(ca.n), Subject: pkix.Name{CommonName: "agent"},
		NotBefore: time.Now().Add(time.Duration(ca.n) * time.Second), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	require.NoError(t, err)
	return der
}

func enrolled(t *testing.T) (string, *testCA, *Identity) {
	dir := t.TempDir()
	ca := newCA(t)
	r, err := BeginEnrollment(dir)
	require.NoError(t, err)
	id, err := r.Enrolled(Config{Server: "https://cp:8443", AgentID: "a1", TenantID: "t1", HeartbeatIntervalSeconds: 60}, ca.issue(t, r.Key), ca.cert.Raw)
	require.NoError(t, err)
	return dir, ca, id
}

func TestEnrollmentFilesAndModes(t *testing.T) {
	dir, _, id := enrolled(t)
	assert.Equal(t, "a1", id.Config.AgentID)
	for name, mode := range map[string]os.FileMode{KeyFile: 0o600, ConfigFile: 0o600, CertFile: 0o644, CAFile: 0o644} {
		st, err := os.Stat(filepath.Join(dir, name))
		require.NoError(t, err)
		assert.Equal(t, mode, st.Mode().Perm(), name)
	}
	_, err := Load(t.TempDir())
	assert.ErrorIs(t, err, ErrNotEnrolled)
}

// TestRotationSurvivesACrashAtEveryStep stops a rotation after each step,
// as a crash would, and checks that Load then yields a working pair: the old
// one until the new certificate exists, the new one from then on.
func TestRotationSurvivesACrashAtEveryStep(t *testing.T) {
	steps := []struct {
		name    string
		do      func(t *testing.T, dir string, ca *testCA, id *Identity)
		wantNew bool
	}{
		{"next key written", func(t *testing.T, dir string, ca *testCA, id *Identity) {
			_, err := BeginRotation(dir)
			require.NoError(t, err)
		}, false},
		{"certificate issued but not saved", func(t *testing.T, dir string, ca *testCA, id *Identity) {
			r, err := BeginRotation(dir)
			require.NoError(t, err)
			ca.issue(t, r.Key)
		}, false},
		{"certificate saved", func(t *testing.T, dir string, ca *testCA, id *Identity) {
			r, err := BeginRotation(dir)
			require.NoError(t, err)
			err = r.SaveCertificate(ca.issue(t, r.Key))
			require.NoError(t, err)
		}, true},
		{"certificate promoted, key not yet", func(t *testing.T, dir string, ca *testCA, id *Identity) {
			r, err := BeginRotation(dir)
			require.NoError(t, err)
			err = r.SaveCertificate(ca.issue(t, r.Key))
			require.NoError(t, err)
			require.NoError(t, os.Rename(filepath.Join(dir, CertFile+nextSuffix), filepath.Join(dir, CertFile)))
		}, true},
		{"finished", func(t *testing.T, dir string, ca *testCA, id *Identity) {
			r, err := BeginRotation(dir)
			require.NoError(t, err)
			err = r.SaveCertificate(ca.issue(t, r.Key))
			require.NoError(t, err)
			_, err = r.Finish()
			require.NoError(t, err)
		}, true},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			dir, ca, before := enrolled(t)
			st.do(t, dir, ca, before)
			after, err := Load(dir)
			require.NoError(t, err)
			pub := after.Cert.PublicKey.(*ecdsa.PublicKey)
			assert.True(t, pub.Equal(&after.Key.PublicKey), "the loaded key and certificate belong together")
			if st.wantNew {
				assert.NotEqual(t, before.Cert.SerialNumber, after.Cert.SerialNumber, "the new certificate is used")
			} else {
				assert.Equal(t, before.Cert.SerialNumber, after.Cert.SerialNumber, "the old certificate is kept")
			}
			// Load leaves a clean directory: no .next files.
			for _, f := range []string{KeyFile + nextSuffix, CertFile + nextSuffix} {
				_, err := os.Stat(filepath.Join(dir, f))
				assert.ErrorIs(t, err, os.ErrNotExist, f)
			}
			again, err := Load(dir)
			require.NoError(t, err)
			assert.Equal(t, after.Cert.SerialNumber, again.Cert.SerialNumber, "stable across loads")
		})
	}
}

func TestMismatchedFilesSaySo(t *testing.T) {
	dir, _, _ := enrolled(t)
	other, err := NewKey()
	require.NoError(t, err)
	require.NoError(t, writeKey(filepath.Join(dir, KeyFile), other))
	_, err = Load(dir)
	assert.ErrorContains(t, err, "do not match")
}

// TestFailedReenrollmentKeepsTheOldIdentity: enroll --force writes its new
// key beside the working one; if the server refuses, the old identity
// still loads.
func TestFailedReenrollmentKeepsTheOldIdentity(t *testing.T) {
	dir, _, before := enrolled(t)
	_, err := BeginEnrollment(dir)
	require.NoError(t, err)
	after, err := Load(dir)
	require.NoError(t, err)
	assert.Equal(t, before.Cert.SerialNumber, after.Cert.SerialNumber)
}

// TestInterruptedRotationResumes: a rotation whose certificate was stored
// is resumed, never restarted (restarting would discard the only key of a
// certificate the server may already use), and Peek never changes files.
func TestInterruptedRotationResumes(t *testing.T) {
	dir, ca, _ := enrolled(t)
	r, err := BeginRotation(dir)
	require.NoError(t, err)
	require.NoError(t, r.SaveCertificate(ca.issue(t, r.Key)))

	peeked, err := Peek(dir)
	require.NoError(t, err)
	assert.Equal(t, r.Cert.SerialNumber, peeked.Cert.SerialNumber, "Peek sees the newest pair")
	_, err = os.Stat(filepath.Join(dir, CertFile+nextSuffix))
	assert.NoError(t, err, "Peek left the rotation's files alone")

	again, err := BeginRotation(dir)
	require.NoError(t, err)
	assert.True(t, again.Key.Equal(r.Key), "the stored next key is kept")
	require.NotNil(t, again.Cert)
	assert.Equal(t, r.Cert.SerialNumber, again.Cert.SerialNumber)

	id, err := again.Finish()
	require.NoError(t, err)
	assert.Equal(t, r.Cert.SerialNumber, id.Cert.SerialNumber)

	// A next key without a certificate is replaced by a fresh attempt.
	stale, err := BeginRotation(dir)
	require.NoError(t, err)
	fresh, err := BeginRotation(dir)
	require.NoError(t, err)
	assert.False(t, fresh.Key.Equal(stale.Key))
	assert.Nil(t, fresh.Cert)
}
