package testenv

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TLSFiles are PEM files made for one test under its temporary directory:
// a CA and server certificates it signed for 127.0.0.1 / localhost (ECDSA
// and RSA), a client CA with a valid and an expired client certificate, and
// a second CA that signed nothing the server presents (a client trusting
// only it sees a "wrong certificate").
type TLSFiles struct {
	Dir                       string
	CA, WrongCA               string // CA certificates (PEM)
	ECDSACert, ECDSAKey       string
	RSACert, RSAKey           string
	ClientCA                  string
	ClientCert, ClientKey     string         // valid, signed by ClientCA
	ExpiredCert, ExpiredKey   string         // signed by ClientCA, expired yesterday
	StrangerCert, StrangerKey string         // valid, signed by WrongCA
	Pool                      *x509.CertPool // CA, for clients
}

// ClientPair loads a client certificate pair from the files.
func (f *TLSFiles) ClientPair(t testing.TB, cert, key string) tls.Certificate {
	t.Helper()
	c, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatalf("load client pair: %v", err)
	}
	return c
}

type ca struct {
	cert *x509.Certificate
	key  crypto.Signer
}

var serial int64

// MakeTLSFiles writes a fresh set of test certificates (generated here,
// never checked in).
func MakeTLSFiles(t testing.TB) *TLSFiles {
	t.Helper()
	dir := t.TempDir()
	f := &TLSFiles{Dir: dir}
	now := time.Now()
	root := newCA(t, "edged test CA", now)
	wrong := newCA(t, "someone else's CA", now)
	clientCA := newCA(t, "edged client CA", now)
	f.CA = writePEM(t, dir, "ca.pem", "CERTIFICATE", root.cert.Raw)
	f.WrongCA = writePEM(t, dir, "wrong-ca.pem", "CERTIFICATE", wrong.cert.Raw)
	f.ClientCA = writePEM(t, dir, "client-ca.pem", "CERTIFICATE", clientCA.cert.Raw)
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	f.ECDSACert, f.ECDSAKey = leaf(t, dir, "server-ecdsa", root, ek, true, now.Add(-time.Hour), now.Add(24*time.Hour))
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatalf("rsa key: %v", err)
	}
	f.RSACert, f.RSAKey = leaf(t, dir, "server-rsa", root, rk, true, now.Add(-time.Hour), now.Add(24*time.Hour))
	ck, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	f.ClientCert, f.ClientKey = leaf(t, dir, "client", clientCA, ck, false, now.Add(-time.Hour), now.Add(24*time.Hour))
	xk, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	f.ExpiredCert, f.ExpiredKey = leaf(t, dir, "expired", clientCA, xk, false, now.Add(-48*time.Hour), now.Add(-24*time.Hour))
	sk, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	f.StrangerCert, f.StrangerKey = leaf(t, dir, "stranger", wrong, sk, false, now.Add(-time.Hour), now.Add(24*time.Hour))
	f.Pool = x509.NewCertPool()
	f.Pool.AddCert(root.cert)
	return f
}

func newCA(t testing.TB, name string, now time.Time) ca {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("ca key: %v", err)
	}
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
		NotBefore: now.Add(-72 * time.Hour), NotAfter: now.Add(72 * time.Hour),
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatalf("ca cert: %v", err)
	}
	c, _ := x509.ParseCertificate(der)
	return ca{cert: c, key: k}
}

func leaf(t testing.TB, dir, name string, parent ca, key crypto.Signer, server bool, from, until time.Time) (certFile, keyFile string) {
	t.Helper()
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
		NotBefore: from, NotAfter: until,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.DNSNames = []string{"localhost"}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent.cert, key.Public(), parent.key)
	if err != nil {
		t.Fatalf("%s cert: %v", name, err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("%s key: %v", name, err)
	}
	return writePEM(t, dir, name+".pem", "CERTIFICATE", der), writePEM(t, dir, name+"-key.pem", "PRIVATE KEY", kder)
}

func writePEM(t testing.TB, dir, name, typ string, der []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatalf("write %s: %v", name, err)
	}
	return p
}
