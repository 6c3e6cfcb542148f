package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// pebble is a real ACME CA: Pebble (tools/pebble, v2.10.3), its directory
// and management API on free loopback ports, over HTTPS with a certificate
// of a CA the test made (caFile). It validates challenges for real: every
// name resolves (through the test's DNS server) to 127.0.0.1, HTTP-01 is
// fetched from port httpPort and TLS-ALPN-01 handshaken with port tlsPort,
// the ports of the gateway under test.
type pebble struct {
	t          *testing.T
	bin        string
	dir        string
	listen     string // ACME directory: https://<listen>/dir
	management string // management API: roots, intermediates
	caFile     string // PEM of the CA of Pebble's own HTTPS certificate
	caPool     *x509.CertPool
	proc       *exec.Cmd
	out        *syncBuffer
	done       chan struct{}
}

// pebbleOptions configures a Pebble.
type pebbleOptions struct {
	// HTTPPort and TLSPort are where Pebble validates HTTP-01 and
	// TLS-ALPN-01 challenges (on 127.0.0.1).
	HTTPPort, TLSPort int
	// Validity is the lifetime of the certificates Pebble issues
	// (default 90 days).
	Validity time.Duration
}

// pebbleBinary is $MESHGATE_PEBBLE_BIN, else tools/pebble/bin/pebble (built
// by `make pebble`).
func pebbleBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("MESHGATE_PEBBLE_BIN"); p != "" {
		return p
	}
	p, err := filepath.Abs(filepath.Join("..", "tools", "pebble", "bin", "pebble"))
	if err == nil {
		if _, err = os.Stat(p); err == nil {
			return p
		}
	}
	t.Fatalf("no pebble binary (%v): run `make pebble` or set MESHGATE_PEBBLE_BIN", err)
	return ""
}

// startPebble starts Pebble for the test and waits until its directory
// answers; it is stopped when the test ends.
func startPebble(t *testing.T, o pebbleOptions) *pebble {
	t.Helper()
	e2eOnly(t)
	p := &pebble{t: t, out: &syncBuffer{}, dir: t.TempDir()}
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("---- output of pebble\n%s", p.out.String())
		}
	})
	p.bin = pebbleBinary(t)
	p.listen, p.management = freeAddr(t), freeAddr(t)
	p.writeServingCertificate()
	dns := startLoopbackDNS(t)
	validity := o.Validity
	if validity == 0 {
		validity = 90 * 24 * time.Hour
	}
	config := map[string]any{"pebble": map[string]any{
		"listenAddress":           p.listen,
		"managementListenAddress": p.management,
		"certificate":             filepath.Join(p.dir, "pebble.crt"),
		"privateKey":              filepath.Join(p.dir, "pebble.key"),
		"httpPort":                o.HTTPPort,
		"tlsPort":                 o.TLSPort,
		"ocspResponderURL":        "",
		"keyAlgorithm":            "ecdsa",
		"retryAfter":              map[string]int{"authz": 1, "order": 1},
		"profiles": map[string]any{"default": map[string]any{
			"description": "meshgate e2e", "validityPeriod": int64(validity / time.Second),
		}},
	}}
	data, err := json.Marshal(config)
	if err != nil {
		t.Fatal(err)
	}
	configFile := filepath.Join(p.dir, "pebble.json")
	writeFile(t, configFile, string(data))
	p.proc = exec.Command(p.bin, "-config", configFile, "-strict=false", "-dnsserver", dns)
	// No sleep before validations, no rejected nonces, and a fresh
	// authorization (so a real validation) for every order. Never
	// PEBBLE_VA_ALWAYS_VALID: the challenges are really validated.
	p.proc.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0")
	p.proc.Stdout, p.proc.Stderr = p.out, p.out
	p.done = make(chan struct{})
	if err := p.proc.Start(); err != nil {
		t.Fatalf("start pebble: %v", err)
	}
	done, cmd := p.done, p.proc
	go func() { _ = cmd.Wait(); close(done) }()
	eventually(t, 30*time.Second, "pebble up", func() error {
		select {
		case <-done:
			t.Fatalf("pebble exited at start (its output is logged below)")
		default:
		}
		_, err := p.get(p.directoryURL())
		return err
	})
	return p
}

// directoryURL is the ACME directory.
func (p *pebble) directoryURL() string { return "https://" + p.listen + "/dir" }

// roots is the pool of the root certificates of what Pebble issues (read
// from its management API: Pebble makes a new CA at every start).
func (p *pebble) roots() *x509.CertPool {
	p.t.Helper()
	body, err := p.get("https://" + p.management + "/roots/0")
	if err != nil {
		p.t.Fatalf("pebble roots: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(body) {
		p.t.Fatalf("pebble roots: no certificate in %q", body)
	}
	return pool
}

// intermediate is the certificate of Pebble's issuing intermediate.
func (p *pebble) intermediate() *x509.Certificate {
	p.t.Helper()
	body, err := p.get("https://" + p.management + "/intermediates/0")
	if err != nil {
		p.t.Fatalf("pebble intermediate: %v", err)
	}
	block, _ := pem.Decode(body)
	if block == nil {
		p.t.Fatalf("pebble intermediate: not PEM: %q", body)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		p.t.Fatalf("pebble intermediate: %v", err)
	}
	return c
}

// get reads an HTTPS URL of Pebble.
func (p *pebble) get(url string) ([]byte, error) {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.caPool}}}
	resp, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("pebble %s: %d %.300s", url, resp.StatusCode, body)
	}
	return body, nil
}

// stop ends Pebble (SIGTERM) and waits for it.
func (p *pebble) stop() {
	if p.proc == nil {
		return
	}
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.proc.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.proc.Process.Kill()
		<-p.done
	}
}

// writeServingCertificate makes a CA (caFile) and Pebble's HTTPS
// certificate for 127.0.0.1 and localhost, signed by it.
func (p *pebble) writeServingCertificate() {
	t := p.t
	t.Helper()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	caKey, key := newKey(), newKey()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "meshgate e2e pebble CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "pebble"},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	p.caFile = filepath.Join(p.dir, "ca.crt")
	writeFile(t, p.caFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})))
	writeFile(t, filepath.Join(p.dir, "pebble.crt"), string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	writeFile(t, filepath.Join(p.dir, "pebble.key"), string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})))
	p.caPool = x509.NewCertPool()
	p.caPool.AddCert(ca)
}

// startLoopbackDNS serves DNS over UDP and TCP on a free loopback port,
// answering every A question with 127.0.0.1 (and no AAAA records), so
// that Pebble validates any name against the local gateway. It stops with
// the test.
func startLoopbackDNS(t *testing.T) string {
	t.Helper()
	var conn net.PacketConn
	var ln net.Listener
	var err error
	for range 20 {
		addr := freeAddr(t)
		if ln, err = net.Listen("tcp", addr); err != nil {
			continue
		}
		if conn, err = net.ListenPacket("udp", addr); err == nil {
			break
		}
		ln.Close()
	}
	if err != nil {
		t.Fatalf("dns: %v", err)
	}
	t.Cleanup(func() { conn.Close(); ln.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			if reply, ok := loopbackDNSAnswer(buf[:n]); ok {
				_, _ = conn.WriteTo(reply, from)
			}
		}
	}()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serveDNSOverTCP(c)
		}
	}()
	return conn.LocalAddr().String()
}

// serveDNSOverTCP answers the queries of one DNS-over-TCP connection
// (each message after its two-byte length) until it closes.
func serveDNSOverTCP(c net.Conn) {
	defer c.Close()
	for {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		var size [2]byte
		if _, err := io.ReadFull(c, size[:]); err != nil {
			return
		}
		query := make([]byte, int(size[0])<<8|int(size[1]))
		if _, err := io.ReadFull(c, query); err != nil {
			return
		}
		reply, ok := loopbackDNSAnswer(query)
		if !ok {
			return
		}
		if _, err := c.Write(append([]byte{byte(len(reply) >> 8), byte(len(reply))}, reply...)); err != nil {
			return
		}
	}
}

// loopbackDNSAnswer answers a DNS query: A 127.0.0.1 for an A question,
// no records for any other.
func loopbackDNSAnswer(query []byte) ([]byte, bool) {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		return nil, false
	}
	q, err := p.Question()
	if err != nil {
		return nil, false
	}
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired, RecursionAvailable: true})
	b.EnableCompression()
	if b.StartQuestions() != nil || b.Question(q) != nil || b.StartAnswers() != nil {
		return nil, false
	}
	if q.Type == dnsmessage.TypeA {
		if b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 1}, dnsmessage.AResource{A: [4]byte{127, 0, 0, 1}}) != nil {
			return nil, false
		}
	}
	out, err := b.Finish()
	return out, err == nil
}

// TestPebbleHarness: the harness's Pebble serves its ACME directory over
// HTTPS trusted through caFile, and its DNS server resolves any name to
// loopback.
func TestPebbleHarness(t *testing.T) {
	t.Parallel()
	p := startPebble(t, pebbleOptions{HTTPPort: portOf(freeAddr(t)), TLSPort: portOf(freeAddr(t))})
	body, err := p.get(p.directoryURL())
	if err != nil {
		t.Fatal(err)
	}
	var dir map[string]any
	if err := json.Unmarshal(body, &dir); err != nil {
		t.Fatalf("directory: %v: %s", err, body)
	}
	for _, k := range []string{"newAccount", "newNonce", "newOrder"} {
		if _, ok := dir[k]; !ok {
			t.Errorf("directory has no %s: %s", k, body)
		}
	}
	if p.roots() == nil || p.intermediate().Subject.CommonName == "" {
		t.Error("no roots or intermediate")
	}
	reply, ok := loopbackDNSAnswer(mustDNSQuery(t, "shop.acme.test.", dnsmessage.TypeA))
	if !ok {
		t.Fatal("no DNS answer")
	}
	var parser dnsmessage.Parser
	if _, err := parser.Start(reply); err != nil {
		t.Fatal(err)
	}
	_ = parser.SkipAllQuestions()
	a, err := parser.AllAnswers()
	if err != nil || len(a) != 1 || a[0].Body.(*dnsmessage.AResource).A != [4]byte{127, 0, 0, 1} {
		t.Fatalf("DNS answers %v (%v), want A 127.0.0.1", a, err)
	}
}

// mustDNSQuery is a DNS query for name of type typ.
func mustDNSQuery(t *testing.T, name string, typ dnsmessage.Type) []byte {
	t.Helper()
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 7, RecursionDesired: true})
	if err := b.StartQuestions(); err != nil {
		t.Fatal(err)
	}
	if err := b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: typ, Class: dnsmessage.ClassINET}); err != nil {
		t.Fatal(err)
	}
	out, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return out
}
