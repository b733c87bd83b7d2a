package recording

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// KeyFile is the signing key's file name in the state directory.
const KeyFile = "recording.key"

// LoadOrCreateKey reads the ed25519 signing key (PKCS#8 PEM) at path,
// creating it (0600, directory 0700) when it does not exist yet.
func LoadOrCreateKey(path string) (ed25519.PrivateKey, error) {
	k, err := LoadKey(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return k, err
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate recording key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("encode recording key: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create recording key %s: %w", path, err)
	}
	// Written whole to a temporary file and linked into place, so that a
	// crash never leaves a partial key behind (which would stop every
	// later start); link fails if another daemon starting at the same
	// time got there first, and its key is the one.
	f, err := os.CreateTemp(dir, ".recording.key.*")
	if err != nil {
		return nil, fmt.Errorf("create recording key %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	err = pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("write recording key %s: %w", path, err)
	}
	if err := os.Link(tmp, path); errors.Is(err, fs.ErrExist) {
		return LoadKey(path)
	} else if err != nil {
		return nil, fmt.Errorf("create recording key %s: %w", path, err)
	}
	syncDir(dir)
	return priv, nil
}

// LoadKey reads an existing signing key.
func LoadKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read recording key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("%w: %s is not a PEM private key", ErrBadKey, path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadKey, path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%w: %s is not an ed25519 key", ErrBadKey, path)
	}
	return priv, nil
}

// PublicKeyPEM encodes a public key as PKIX PEM (what `interlock audit
// pubkey` prints and `audit verify --pubkey` reads).
func PublicKeyPEM(pub ed25519.PublicKey) []byte {
	der, _ := x509.MarshalPKIXPublicKey(pub)
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// ParsePublicKeyPEM reads a key written by PublicKeyPEM.
func ParsePublicKeyPEM(b []byte) (ed25519.PublicKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("%w: not a PEM public key", ErrBadKey)
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w: not an ed25519 key", ErrBadKey)
	}
	return pub, nil
}

// KeyID names a public key in checkpoints: hex of the first 8 bytes of its
// SHA-256.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// Head is the latest signed checkpoint, kept outside the chain (a file
// rewritten atomically, or an append-only table): the chain must reach
// Seq with Hash, and may start no later than FirstSeq. Its signature is
// its own (headMessage), so that no checkpoint in the chain can be turned
// into a head for a chain truncated after it.
type Head struct {
	Host     string    `json:"host"`
	Seq      uint64    `json:"seq"`
	Hash     string    `json:"hash"`
	FirstSeq uint64    `json:"first_seq"`
	Time     time.Time `json:"time"`
	Key      string    `json:"key"`
	Sig      string    `json:"sig"`
}

// checkpointMessage is the byte string a checkpoint's signature covers.
// Checkpoints of earlier versions (no adopted tail, no time) keep the
// first version's message, so that their chains still verify; removing
// the fields from a later checkpoint breaks its signature.
func checkpointMessage(host string, c *Checkpoint) []byte {
	m := host + "\n" + strconv.FormatUint(c.Seq, 10) + "\n" + c.Hash + "\n" + strconv.FormatUint(c.FirstSeq, 10)
	if c.Adopted == 0 && c.TimeNS == 0 && c.Sealed == 0 {
		return []byte("interlock-checkpoint-v1\n" + m)
	}
	return []byte("interlock-checkpoint-v2\n" + m + "\n" + strconv.FormatUint(c.Adopted, 10) + "\n" + strconv.FormatInt(c.TimeNS, 10) + "\n" + strconv.FormatInt(c.Sealed, 10))
}

// headMessage is the byte string a head's signature covers.
func headMessage(h *Head) []byte {
	return []byte("interlock-head-v1\n" + h.Host + "\n" + strconv.FormatUint(h.Seq, 10) + "\n" + h.Hash + "\n" +
		strconv.FormatUint(h.FirstSeq, 10) + "\n" + strconv.FormatInt(h.Time.UnixNano(), 10))
}

func sign(priv ed25519.PrivateKey, host string, seq uint64, hash string, firstSeq, adopted uint64, now time.Time) Checkpoint {
	return signSeal(priv, host, seq, hash, firstSeq, adopted, now, 0)
}

// signSeal signs a checkpoint; sealed > 0 makes it a segment's seal.
func signSeal(priv ed25519.PrivateKey, host string, seq uint64, hash string, firstSeq, adopted uint64, now time.Time, sealed int64) Checkpoint {
	pub := priv.Public().(ed25519.PublicKey)
	c := Checkpoint{Seq: seq, Hash: hash, FirstSeq: firstSeq, Adopted: adopted, TimeNS: now.UnixNano(), Sealed: sealed, Key: KeyID(pub)}
	c.Sig = base64.StdEncoding.EncodeToString(ed25519.Sign(priv, checkpointMessage(host, &c)))
	return c
}

func (c *Checkpoint) verify(pub ed25519.PublicKey, host string) bool {
	sig, err := base64.StdEncoding.DecodeString(c.Sig)
	return err == nil && ed25519.Verify(pub, checkpointMessage(host, c), sig)
}

// signHead signs h (its Key and Sig are set).
func signHead(priv ed25519.PrivateKey, h *Head) {
	h.Key = KeyID(priv.Public().(ed25519.PublicKey))
	h.Sig = base64.StdEncoding.EncodeToString(ed25519.Sign(priv, headMessage(h)))
}

func (h *Head) verify(pub ed25519.PublicKey) bool {
	sig, err := base64.StdEncoding.DecodeString(h.Sig)
	return err == nil && ed25519.Verify(pub, headMessage(h), sig)
}

// legacy reports whether h carries a checkpoint's signature, as heads of
// earlier versions did: valid, but indistinguishable from a head rebuilt
// from any checkpoint in the chain.
func (h *Head) legacy(pub ed25519.PublicKey) bool {
	c := Checkpoint{Seq: h.Seq, Hash: h.Hash, FirstSeq: h.FirstSeq, Sig: h.Sig}
	return c.verify(pub, h.Host)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
