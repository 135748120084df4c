// Package secrets seals the credentials the control plane must be able to use
// again (webhook signing secrets, a destination's extra auth header, later
// Intune client secrets) so that the database holds only ciphertext. The key
// comes from configuration, never from the database: a copy of the database
// alone reveals nothing.
//
// Ciphertexts are AES-256-GCM, bound by additional data to the row and field
// they belong to, so one tenant's sealed value cannot be pasted into another
// row and opened there. Each ciphertext names its key (the first four bytes of
// the key's SHA-256), so keys can be rotated: seal with the newest, open with
// any configured.
package secrets

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// KeySize is the size of a sealing key: AES-256.
const KeySize = 32

// DefaultKeyFile is the key file created in the data directory when no key is
// configured, next to the control plane's CA key.
const DefaultKeyFile = "secrets.key"

const (
	idSize  = 4
	version = 1
)

// ErrUnknownKey means a ciphertext was sealed with a key that is not
// configured (a rotation dropped it too early).
var ErrUnknownKey = errors.New("secrets: sealed with a key that is not configured")

// Keyring seals with its first key and opens with any of them.
type Keyring struct {
	keys []key
}

type key struct {
	id   [idSize]byte
	aead cipher.AEAD
	raw  []byte
}

// NewKeyring makes a keyring of raw 32-byte keys, the sealing key first.
func NewKeyring(raw ...[]byte) (*Keyring, error) {
	if len(raw) == 0 {
		return nil, errors.New("secrets: no key")
	}
	k := &Keyring{}
	for i, r := range raw {
		if len(r) != KeySize {
			return nil, fmt.Errorf("secrets: key %d is %d bytes, want %d", i+1, len(r), KeySize)
		}
		block, err := aes.NewCipher(r)
		if err != nil {
			return nil, err
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256(r)
		var kk key
		copy(kk.id[:], sum[:idSize])
		kk.aead = aead
		kk.raw = bytes.Clone(r)
		k.keys = append(k.keys, kk)
	}
	return k, nil
}

// Seal encrypts plaintext bound to context (for example
// "delivery_destinations/<tenant>/<id>/signing").
func (k *Keyring) Seal(plaintext []byte, context string) ([]byte, error) {
	kk := k.keys[0]
	out := make([]byte, 0, 1+idSize+kk.aead.NonceSize()+len(plaintext)+kk.aead.Overhead())
	out = append(out, version)
	out = append(out, kk.id[:]...)
	nonce := make([]byte, kk.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	out = append(out, nonce...)
	return kk.aead.Seal(out, nonce, plaintext, []byte(context)), nil
}

// DeriveKeys returns a key for another purpose than sealing (for example
// "cursor" for signing list cursors) from each key of the ring, in the
// ring's order: HMAC-SHA256(key, "edgeward/"+purpose). Derived keys rotate
// with the ring, and a derived key reveals nothing about the sealing key.
func (k *Keyring) DeriveKeys(purpose string) [][]byte {
	out := make([][]byte, 0, len(k.keys))
	for _, kk := range k.keys {
		m := hmac.New(sha256.New, kk.raw)
		m.Write([]byte("edgeward/" + purpose))
		out = append(out, m.Sum(nil))
	}
	return out
}

// Open decrypts what Seal made for the same context.
func (k *Keyring) Open(sealed []byte, context string) ([]byte, error) {
	if len(sealed) < 1+idSize || sealed[0] != version {
		return nil, errors.New("secrets: not a sealed value")
	}
	id := sealed[1 : 1+idSize]
	for _, kk := range k.keys {
		if !bytes.Equal(kk.id[:], id) {
			continue
		}
		rest := sealed[1+idSize:]
		if len(rest) < kk.aead.NonceSize() {
			return nil, errors.New("secrets: sealed value too short")
		}
		pt, err := kk.aead.Open(nil, rest[:kk.aead.NonceSize()], rest[kk.aead.NonceSize():], []byte(context))
		if err != nil {
			return nil, errors.New("secrets: sealed value does not open (wrong key or context, or tampered)")
		}
		return pt, nil
	}
	return nil, ErrUnknownKey
}

// Load builds a keyring from key references, the sealing key first. A
// reference is env:NAME (a variable holding the base64 key) or file:PATH (a
// file holding the base64 key). With no references, the key is the data
// directory's secrets.key, created (mode 0600) on first start as the CA is.
func Load(refs []string, dataDir string) (*Keyring, error) {
	if len(refs) == 0 {
		if dataDir == "" {
			return nil, errors.New("secrets: no --secrets-key and no data directory to keep one in")
		}
		path := filepath.Join(dataDir, DefaultKeyFile)
		if err := createKeyFile(path); err != nil {
			return nil, err
		}
		refs = []string{"file:" + path}
	}
	var raw [][]byte
	for _, ref := range refs {
		b, err := resolve(ref)
		if err != nil {
			return nil, err
		}
		raw = append(raw, b)
	}
	return NewKeyring(raw...)
}

// resolve reads one key reference. Errors name the reference, never its value.
func resolve(ref string) ([]byte, error) {
	kind, arg, ok := strings.Cut(ref, ":")
	var text string
	switch {
	case ok && kind == "env":
		v, set := os.LookupEnv(arg)
		if !set {
			return nil, fmt.Errorf("secrets: key %s: the variable is not set", ref)
		}
		text = v
	case ok && kind == "file":
		b, err := os.ReadFile(arg)
		if err != nil {
			return nil, fmt.Errorf("secrets: key %s: %w", ref, err)
		}
		text = string(b)
	default:
		return nil, fmt.Errorf("secrets: key reference %q must be env:NAME or file:PATH", ref)
	}
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(text))
	if err != nil || len(b) != KeySize {
		return nil, fmt.Errorf("secrets: key %s must be %d bytes in standard base64 (make one with: head -c %d /dev/urandom | base64)", ref, KeySize, KeySize)
	}
	return b, nil
}

// createKeyFile writes a new random key unless the file exists. The key is
// written to a temporary file, synced, and linked into place, so no process
// (a replica starting at the same time, or this one after a power loss)
// ever reads a partial key.
func createKeyFile(path string) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	b := make([]byte, KeySize)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, DefaultKeyFile+".*")
	if err != nil {
		return fmt.Errorf("secrets: create key file: %w", err)
	}
	tmp := f.Name()
	defer func() { _ = os.Remove(tmp) }()
	if err = f.Chmod(0o600); err == nil {
		_, err = f.WriteString(base64.StdEncoding.EncodeToString(b) + "\n")
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("secrets: write key file: %w", err)
	}
	if err := os.Link(tmp, path); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("secrets: install key file: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}
