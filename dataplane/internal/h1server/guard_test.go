package h1server

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// steppedConn reads its input at most step bytes at a time (0: all at
// once), then io.EOF; other methods are unused.
type steppedConn struct {
	net.Conn
	in   *strings.Reader
	step int
}

func (c *steppedConn) Read(p []byte) (int, error) {
	if c.step > 0 && len(p) > c.step {
		p = p[:c.step]
	}
	return c.in.Read(p)
}

// guardOutput returns what a reader of input through the guard gets, with
// reads of at most step bytes.
func guardOutput(input string, step int) []byte {
	gc := newGuardedConn(&steppedConn{in: strings.NewReader(input), step: step}).(*guardedConn)
	var out bytes.Buffer
	buf := make([]byte, max(step, 4096))
	for {
		n, err := gc.Read(buf)
		out.Write(buf[:n])
		if err != nil {
			return out.Bytes()
		}
	}
}

var poisons = [][]byte{poisonLineStart, poisonMidLine, poisonChunkLine, poisonChunkCRLF, poisonChunkLF}

const chunkedHead = "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"

// guardCases: refused is the part of the input passed on before the
// violation ("": the whole input passes, unchanged).
var guardCases = []struct {
	name    string
	input   string
	refused string
}{
	// Passed on unchanged.
	{"GET", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", ""},
	{"pipelined", "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n", ""},
	{"CL body with bare LF and folding inside", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\n\r\na\nb\r\n c\rdGET / HTTP/1.1\r\nHost: a\r\n\r\n", ""},
	{"CL with whitespace", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \t 3 \t\r\n\r\nabc", ""},
	{"two equal CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\ncontent-length: 03\r\n\r\nabc", ""},
	{"CL 0", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", ""},
	{"chunked", chunkedHead + "5\r\nhello\r\nA\r\n0123456789\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", ""},
	{"chunked with extensions, whitespace and trailers", chunkedHead + "5;a=b;c=\"d e\"\r\nhello\r\n5 \t\r\nworld\r\n0;x\r\nX-T: 1\r\nX-U: 2\r\n\r\n", ""},
	{"chunked with 16 hex digits", chunkedHead + "000000000000000A\r\n0123456789\r\n0\r\n\r\n", ""},
	{"chunk data holding a head", chunkedHead + "19\r\nGET /x HTTP/1.1\nHost: a\n\n\r\n0\r\n\r\n", ""},
	{"TE in any case, spaces around", "POST / HTTP/1.1\r\nHost: a\r\ntransfer-ENCODING:  Chunked \t\r\n\r\n0\r\n\r\n", ""},
	{"TE gzip, chunked: net/http's 501", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\n", ""},
	{"leading CRLF after POST", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", ""},
	{"HTTP/1.0 with CL", "POST / HTTP/1.0\r\nHost: a\r\nContent-Length: 1\r\n\r\nx", ""},
	{"h2c preface then frames", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\n\n\r\x00 \t", ""},
	{"PRI without the preface", "PRI * HTTP/2.0\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", ""},
	{"field without colon: net/http's 400", "GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n", ""},
	{"field names that are not CL or TE", "POST / HTTP/1.1\r\nHost: a\r\nContent-Lengthy: x\r\nTransfer-Encodings: x\r\nContent-Length: 1\r\n\r\nx", ""},

	// Heads.
	{"bare LF after the request line", "GET / HTTP/1.1\nHost: a\r\n\r\n", "GET / HTTP/1.1"},
	{"bare LF after a field", "GET / HTTP/1.1\r\nHost: a\n\r\n", "GET / HTTP/1.1\r\nHost: a"},
	{"bare LF ending the head", "GET / HTTP/1.1\r\nHost: a\r\n\n", "GET / HTTP/1.1\r\nHost: a\r\n"},
	{"bare LF in a field name", "GET / HTTP/1.1\r\nHo\nst: a\r\n\r\n", "GET / HTTP/1.1\r\nHo"},
	{"bare CR in the request line", "GET /a\rb HTTP/1.1\r\nHost: a\r\n\r\n", "GET /a\r"},
	{"bare CR in a value", "GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", "GET / HTTP/1.1\r\nHost: a\r"},
	{"CR CR LF", "GET / HTTP/1.1\r\nHost: a\r\r\n\r\n", "GET / HTTP/1.1\r\nHost: a\r"},
	{"bare CR ending the head", "GET / HTTP/1.1\r\nHost: a\r\n\rX", "GET / HTTP/1.1\r\nHost: a\r\n\r"},
	{"obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n 2\r\n\r\n", "GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n"},
	{"obs-fold with a tab", "GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n\t2\r\n\r\n", "GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n"},
	{"whitespace before the first field", "GET / HTTP/1.1\r\n Host: a\r\n\r\n", "GET / HTTP/1.1\r\n"},
	{"bad head after a body", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nokGET / HTTP/1.1\nHost: a\n\n", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nokGET / HTTP/1.1"},

	// Framing.
	{"CL then TE", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r"},
	{"TE then CL", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r"},
	{"TE on HTTP/1.0", "POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r"},
	{"TE identity", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r"},
	{"TE xchunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r"},
	{"TE chunkedx", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunkedx\r\n\r\n", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunkedx\r\n\r"},
	{"TE chunked x", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked x\r\n\r\n", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked x\r\n\r"},
	{"TE chunked, identity", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r"},
	{"TE fields chunked then identity", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r"},
	{"TE empty", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r"},
	{"CL with a sign", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\nx", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r"},
	{"CL negative", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\nx", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r"},
	{"CL with an inner space", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 0\r\n\r\n", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 0\r\n\r"},
	{"CL list", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1,1\r\n\r\nx", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1,1\r\n\r"},
	{"CL empty", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r"},
	{"CL over 63 bits", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775808\r\n\r\n", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775808\r\n\r"},
	{"two different CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxy", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r"},

	// Chunked bodies.
	{"chunk size of 17 digits", chunkedHead + "00000000000000005\r\nhello\r\n0\r\n\r\n", chunkedHead + "0000000000000000"},
	{"chunk size negative", chunkedHead + "-5\r\nhello\r\n0\r\n\r\n", chunkedHead},
	{"chunk size after a space", chunkedHead + " 5\r\nhello\r\n0\r\n\r\n", chunkedHead},
	{"chunk size 0x", chunkedHead + "0x5\r\nhello\r\n0\r\n\r\n", chunkedHead + "0"},
	{"chunk size empty", chunkedHead + "\r\nhello\r\n0\r\n\r\n", chunkedHead},
	{"chunk size then extension without size", chunkedHead + ";x\r\nhello\r\n0\r\n\r\n", chunkedHead},
	{"whitespace before the extension", chunkedHead + "5 ;x\r\nhello\r\n0\r\n\r\n", chunkedHead + "5 "},
	{"chunk size line with bare LF", chunkedHead + "5\nhello\r\n0\r\n\r\n", chunkedHead + "5"},
	{"chunk extension with bare LF", chunkedHead + "5;x\nhello\r\n0\r\n\r\n", chunkedHead + "5;x"},
	{"chunk extension with bare CR", chunkedHead + "5;x\ry\r\nhello\r\n0\r\n\r\n", chunkedHead + "5;x\r"},
	{"chunk data too long", chunkedHead + "5\r\nhelloX\r\n0\r\n\r\n", chunkedHead + "5\r\nhello"},
	{"chunk data CR without LF", chunkedHead + "5\r\nhello\rX0\r\n\r\n", chunkedHead + "5\r\nhello\r"},
	{"last chunk with bare LF", chunkedHead + "0\n\r\n", chunkedHead + "0"},
	{"trailer folded", chunkedHead + "0\r\nX-T: 1\r\n 2\r\n\r\n", chunkedHead + "0\r\nX-T: 1\r\n"},
	{"trailer with bare LF", chunkedHead + "0\r\nX-T: 1\n\r\n", chunkedHead + "0\r\nX-T: 1"},
	{"trailer with bare CR", chunkedHead + "0\r\nX-T: 1\r2\r\n\r\n", chunkedHead + "0\r\nX-T: 1\r"},
	{"end of trailers with bare CR", chunkedHead + "0\r\n\rX", chunkedHead + "0\r\n\r"},
}

// TestGuardRefusesAndPasses: the guard passes valid streams unchanged and
// replaces everything from the first violation on, whatever the sizes of
// the reads.
func TestGuardRefusesAndPasses(t *testing.T) {
	t.Parallel()
	for _, tt := range guardCases {
		t.Run(tt.name, func(t *testing.T) {
			for _, step := range []int{0, 1, 2, 7} {
				out := guardOutput(tt.input, step)
				if tt.refused == "" {
					if string(out) != tt.input {
						t.Fatalf("step %d: passed %q, want the input unchanged", step, out)
					}
					continue
				}
				if !strings.HasPrefix(tt.input, tt.refused) {
					t.Fatalf("bad case: %q is not a prefix of the input", tt.refused)
				}
				rest, ok := bytes.CutPrefix(out, []byte(tt.refused))
				if !ok || !slices.ContainsFunc(poisons, func(p []byte) bool { return bytes.Equal(rest, p) }) {
					t.Fatalf("step %d: passed %q, want %q and a replacement", step, out, tt.refused)
				}
			}
		})
	}
}

// bodyHandler answers 200 with "METHOD path body" and, when the body
// cannot be read, 400 with Connection: close, as the proxy does.
var bodyHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	w.Header().Set("Content-Type", "text/plain")
	if err != nil {
		w.Header().Set("Connection", "close")
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.Path, body)
})

// TestGuardedServers: the fast path and net/http behind the guard answer
// the same statuses to requests the guard refuses, and serve nothing after
// a refusal, whether the bytes come at once or a few at a time.
func TestGuardedServers(t *testing.T) {
	t.Parallel()
	const ok, bad = http.StatusOK, http.StatusBadRequest
	tests := []struct {
		name   string
		input  string
		status []int
		served []string
	}{
		{"CL and TE", "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n", []int{bad}, nil},
		{"TE on HTTP/1.0", "POST /a HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", []int{bad}, nil},
		{"TE on a body-less HTTP/1.0 GET", "GET /a HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", []int{bad}, nil},
		{"TE xchunked", "POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", []int{bad}, nil},
		{"bare LF", "GET /a HTTP/1.1\nHost: a\n\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n", []int{bad}, nil},
		{"CR CR LF", "GET /a HTTP/1.1\r\nHost: a\r\nX-A: 1\r\r\n\r\n", []int{bad}, nil},
		{"obs-fold", "GET /a HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n 2\r\n\r\n", []int{bad}, nil},
		{"good then obs-fold", "GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n 2\r\n\r\n", []int{ok, bad}, []string{"GET /a "}},
		{"body then obs-fold", "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhiGET /x HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n 2\r\n\r\n", []int{ok, bad}, []string{"POST /a hi"}},
		{"chunked then CL and TE", chunkedHead + "2\r\nhi\r\n0\r\n\r\nPOST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", []int{ok, bad}, []string{"POST /c hi"}},
		{"bad chunk size", chunkedHead + "zz\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n", []int{bad}, nil},
		{"chunk size overflow", chunkedHead + "00000000000000002\r\nhi\r\n0\r\n\r\n", []int{bad}, nil},
		{"chunk extension with bare LF", chunkedHead + "2;x\nhi\r\n0\r\n\r\n", []int{bad}, nil},
		{"trailer folded", chunkedHead + "2\r\nhi\r\n0\r\nX-T: 1\r\n 2\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n", []int{bad}, nil},
		{"valid chunked then GET", chunkedHead + "2;e=1\r\nhi\r\n0\r\nX-T: 1\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n", []int{ok, ok}, []string{"POST /c hi", "GET /b "}},
		{"CL with whitespace then GET", "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length:  2 \r\n\r\nhiGET /b HTTP/1.1\r\nHost: a\r\n\r\n", []int{ok, ok}, []string{"POST /a hi", "GET /b "}},
	}
	for _, kind := range []string{"fast", "guarded"} {
		l := newMemListener()
		fallback := newStdServer(bodyHandler)
		if kind == "fast" {
			srv := &Server{Fallback: fallback}
			go func() { _ = srv.Serve(l) }()
			t.Cleanup(func() { _ = srv.Close() })
		} else {
			srv := &Guarded{Server: fallback}
			go func() { _ = srv.Serve(l) }()
			t.Cleanup(func() { _ = srv.Close() })
		}
		for _, tt := range tests {
			for _, step := range []int{0, 1, 5} {
				t.Run(fmt.Sprintf("%s/%s/step %d", kind, tt.name, step), func(t *testing.T) {
					out := exchangeStepped(t, l, tt.input, step)
					var status []int
					var served []string
					for _, r := range parseResponses(out) {
						n, _, _ := strings.Cut(r.status, " ")
						var code int
						fmt.Sscan(n, &code)
						status = append(status, code)
						if code == ok {
							served = append(served, r.body)
						}
					}
					if !slices.Equal(status, tt.status) || !slices.Equal(served, tt.served) {
						t.Errorf("statuses %v serving %q, want %v serving %q\noutput: %q", status, served, tt.status, tt.served, out)
					}
				})
			}
		}
	}
}

// steppedMemConn is a memConn whose reads return at most step bytes.
type steppedMemConn struct {
	*memConn
	step int
}

func (c *steppedMemConn) Read(p []byte) (int, error) {
	if c.step > 0 && len(p) > c.step {
		p = p[:c.step]
	}
	return c.memConn.Read(p)
}

// exchangeStepped is exchange with reads of at most step bytes.
func exchangeStepped(tb testing.TB, l *memListener, input string, step int) []byte {
	c := newMemConn([]byte(input))
	l.conns <- &steppedMemConn{memConn: c, step: step}
	select {
	case <-c.closed:
	case <-time.After(10 * time.Second):
		tb.Fatalf("connection not closed; input %q, output so far %q", input, c.output())
	}
	return c.output()
}

// TestGuardReadAfterRefusalWaits: after the replacement, a read (net/http's
// background read during a handler) waits for the connection as an idle
// read does, instead of reporting an end of stream that would cancel the
// request in flight; the end of the connection still ends it.
func TestGuardReadAfterRefusalWaits(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		client, server := net.Pipe()
		gc := newGuardedConn(server)
		go func() {
			_, _ = client.Write([]byte("GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nX: 1\r\n 2\r\n\r\n"))
		}()
		var got []byte
		buf := make([]byte, 4096)
		for !bytes.HasSuffix(got, poisonLineStart) {
			n, err := gc.Read(buf)
			if err != nil {
				t.Fatalf("read: %v after %q", err, got)
			}
			got = append(got, buf[:n]...)
		}
		var mu sync.Mutex
		var readErr error
		returned := false
		go func() {
			_, err := gc.Read(buf)
			mu.Lock()
			readErr, returned = err, true
			mu.Unlock()
		}()
		synctest.Wait()
		mu.Lock()
		if returned {
			t.Fatalf("read after the refusal returned at once: %v", readErr)
		}
		mu.Unlock()
		_ = client.Close()
		synctest.Wait()
		mu.Lock()
		defer mu.Unlock()
		if !returned || !errors.Is(readErr, io.EOF) {
			t.Fatalf("read after the client left: returned %v, %v; want io.EOF", returned, readErr)
		}
	})
}

// TestRefusedConnectionLingers: the client of a refused request gets the
// whole 400 and then the end of the connection, not a reset, although
// net/http stopped reading its request early (here at the 14 bytes it
// peeks for the h2c preface).
func TestRefusedConnectionLingers(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &Guarded{Server: newStdServer(bodyHandler)}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	request := "GET /a\rb HTTP/1.1\r\nHost: a\r\nX-Pad: " + strings.Repeat("p", 2000) + "\r\n\r\n"
	const want = "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n400 Bad Request"
	for i := range 10 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte(request)); err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		out, err := io.ReadAll(c)
		_ = c.Close()
		if err != nil || string(out) != want {
			t.Fatalf("attempt %d: got %q, %v; want %q and the end of the connection", i, out, err, want)
		}
	}
}

// TestGuardCheckDoesNotAllocate: checking costs no allocation.
func TestGuardCheckDoesNotAllocate(t *testing.T) {
	stream := []byte(benchHead + chunkedHead + "5\r\nhello\r\n0\r\n\r\n")
	var g guard
	if allocs := testing.AllocsPerRun(100, func() {
		g = guard{}
		if n, poison := g.check(stream); n != len(stream) || poison != nil {
			t.Fatalf("refused at %d", n)
		}
	}); allocs != 0 {
		t.Errorf("check allocates %v times", allocs)
	}
}

const benchHead = "GET /api/v1/items?page=2 HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) bench\r\n" +
	"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\nAccept-Language: en-US,en;q=0.5\r\n" +
	"Accept-Encoding: gzip, deflate, br\r\nCookie: session=0123456789abcdef; theme=dark\r\nConnection: keep-alive\r\n\r\n"

// BenchmarkGuardCheck measures the guard on a typical request head and on
// a chunked body.
func BenchmarkGuardCheck(b *testing.B) {
	body := chunkedHead + strings.Repeat("4000\r\n"+strings.Repeat("x", 0x4000)+"\r\n", 4) + "0\r\n\r\n"
	for _, bc := range []struct{ name, stream string }{
		{"head", benchHead},
		{"chunked 64KiB", body},
	} {
		b.Run(bc.name, func(b *testing.B) {
			stream := []byte(bc.stream)
			b.SetBytes(int64(len(stream)))
			b.ReportAllocs()
			for b.Loop() {
				var g guard
				if n, poison := g.check(stream); n != len(stream) || poison != nil {
					b.Fatalf("refused at %d", n)
				}
			}
		})
	}
}

// FuzzGuard: the guard never panics, passes a prefix of its input followed
// by at most one replacement, and decides the same whatever the sizes of
// the reads.
func FuzzGuard(f *testing.F) {
	for _, tt := range guardCases {
		f.Add([]byte(tt.input), uint8(3))
	}
	f.Fuzz(func(t *testing.T, data []byte, step uint8) {
		if len(data) > 16<<10 {
			return
		}
		whole := guardOutput(string(data), 0)
		if stepped := guardOutput(string(data), int(step%16)+1); !bytes.Equal(whole, stepped) {
			t.Fatalf("read at once: %q\nread by %d: %q", whole, step%16+1, stepped)
		}
		if bytes.Equal(whole, data) {
			return
		}
		for _, p := range poisons {
			if prefix, ok := bytes.CutSuffix(whole, p); ok && bytes.HasPrefix(data, prefix) {
				return
			}
		}
		t.Fatalf("passed %q: not a prefix of the input and a replacement", whole)
	})
}
