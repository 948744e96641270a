package edgetls

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"hash"

	"golang.org/x/crypto/chacha20poly1305"
)

// suiteParams are what the record layer needs of a cipher suite.
type suiteParams struct {
	keyLen  int
	hash    func() hash.Hash
	chacha  bool
	fixedIV int // TLS 1.2 AES-GCM: the implicit part of the nonce (4); else 12
}

func paramsOf(vers, suite uint16) (suiteParams, error) {
	switch suite {
	case tls.TLS_AES_128_GCM_SHA256:
		return suiteParams{keyLen: 16, hash: sha256.New, fixedIV: 12}, nil
	case tls.TLS_AES_256_GCM_SHA384:
		return suiteParams{keyLen: 32, hash: sha512.New384, fixedIV: 12}, nil
	case tls.TLS_CHACHA20_POLY1305_SHA256:
		return suiteParams{keyLen: 32, hash: sha256.New, chacha: true, fixedIV: 12}, nil
	case tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256:
		return suiteParams{keyLen: 16, hash: sha256.New, fixedIV: 4}, nil
	case tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384:
		return suiteParams{keyLen: 32, hash: sha512.New384, fixedIV: 4}, nil
	}
	return suiteParams{}, fmt.Errorf("edgetls: cipher suite %s (TLS %x): %w", tls.CipherSuiteName(suite), vers, errSuite)
}

// suites12 are the TLS 1.2 suites offered: those whose record protection
// this package implements (AEAD, ECDHE).
var suites12 = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
}

func newAEAD(p suiteParams, key []byte) (cipher.AEAD, error) {
	if p.chacha {
		return chacha20poly1305.New(key)
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// expandLabel is TLS 1.3's HKDF-Expand-Label (RFC 8446 7.1) with an empty
// context, on crypto/hkdf.
func expandLabel(h func() hash.Hash, secret []byte, label string, n int) ([]byte, error) {
	info := make([]byte, 0, 4+6+len(label))
	info = binary.BigEndian.AppendUint16(info, uint16(n))
	info = append(info, byte(6+len(label)))
	info = append(info, "tls13 "...)
	info = append(info, label...)
	info = append(info, 0) // empty context
	return hkdf.Expand(h, secret, string(info), n)
}

// setTraffic13 sets a TLS 1.3 direction's traffic secret (sequence 0);
// the key and IV derive from it when the AEAD is built (traffic13).
func (hf *half) setTraffic13(p suiteParams, secret []byte) error {
	if len(secret) > len(hf.secret) || len(secret) != p.hash().Size() {
		return fmt.Errorf("edgetls: traffic secret of %d bytes: %w", len(secret), errSuite)
	}
	hf.secretLen = uint8(len(secret))
	copy(hf.secret[:], secret)
	hf.seq = 0
	hf.epoch++
	return nil
}

// traffic13 derives the key (returned) and the IV (into iv) of a TLS 1.3
// direction from its traffic secret (RFC 8446 7.3).
func (hf *half) traffic13(p suiteParams, iv []byte) ([]byte, error) {
	secret := hf.secret[:hf.secretLen]
	key, err := expandLabel(p.hash, secret, "key", p.keyLen)
	if err != nil {
		return nil, err
	}
	v, err := expandLabel(p.hash, secret, "iv", 12)
	if err != nil {
		return nil, err
	}
	copy(iv, v)
	return key, nil
}

// update13 moves a TLS 1.3 direction to its next traffic secret (KeyUpdate,
// RFC 8446 7.2).
func (hf *half) update13(p suiteParams) error {
	next, err := expandLabel(p.hash, hf.secret[:hf.secretLen], "traffic upd", int(hf.secretLen))
	if err != nil {
		return err
	}
	return hf.setTraffic13(p, next)
}

// prf12 is the TLS 1.2 PRF (RFC 5246 5: P_hash over crypto/hmac), used for
// the key expansion only: crypto/tls does not export it.
func prf12(h func() hash.Hash, secret []byte, label string, seed []byte, n int) []byte {
	ls := append([]byte(label), seed...)
	mac := hmac.New(h, secret)
	mac.Write(ls)
	a := mac.Sum(nil) // A(1)
	out := make([]byte, 0, n+mac.Size())
	for len(out) < n {
		mac.Reset()
		mac.Write(a)
		mac.Write(ls)
		out = mac.Sum(out)
		mac.Reset()
		mac.Write(a)
		a = mac.Sum(a[:0])
	}
	return out[:n]
}

// keys12 derives a TLS 1.2 AES-GCM connection's keys from its master
// secret (RFC 5246 6.3; no MAC keys for an AEAD suite), as the server:
// "in" is the client's write direction. Both start at sequence 1: each
// side's Finished was record 0 under these keys.
func (st *connState) keys12(p suiteParams, master, clientRandom, serverRandom []byte) {
	seed := append(append([]byte{}, serverRandom...), clientRandom...)
	kb := prf12(p.hash, master, "key expansion", seed, 2*p.keyLen+2*p.fixedIV)
	ck, kb := kb[:p.keyLen], kb[p.keyLen:]
	sk, kb := kb[:p.keyLen], kb[p.keyLen:]
	civ, siv := kb[:p.fixedIV], kb[p.fixedIV:]
	copy(st.in.secret[:], ck)
	copy(st.out.secret[:], sk)
	copy(st.in.secret[ivAt12:], civ)
	copy(st.out.secret[ivAt12:], siv)
	st.in.seq, st.out.seq = 1, 1
	st.in.epoch, st.out.epoch = 1, 1
}
