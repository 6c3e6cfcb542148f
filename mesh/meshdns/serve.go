package meshdns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/miekg/dns"
)

// Listen binds the resolver's UDP and TCP sockets on Options.Listen (with
// port 0, one free port for both).
func (r *Resolver) Listen() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.udp != nil {
		return errors.New("dns resolver: listening already")
	}
	var lastErr error
	for range 8 { // port 0: UDP's free port may be taken for TCP; try another
		udp, err := net.ListenPacket("udp", r.opts.Listen)
		if err != nil {
			return fmt.Errorf("dns resolver: listen udp %s: %w", r.opts.Listen, err)
		}
		tcp, err := net.Listen("tcp", udp.LocalAddr().String())
		if err == nil {
			r.udp, r.tcp = udp, tcp
			return nil
		}
		udp.Close()
		lastErr = fmt.Errorf("dns resolver: listen tcp %s: %w", udp.LocalAddr(), err)
		if ap, _ := netip.ParseAddrPort(r.opts.Listen); ap.Port() != 0 {
			break
		}
	}
	return lastErr
}

// Addr is the bound address (the same port for UDP and TCP), or "" before
// Listen.
func (r *Resolver) Addr() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.udp == nil {
		return ""
	}
	return r.udp.LocalAddr().String()
}

// Serve answers queries on the sockets Listen bound until ctx is done,
// then closes them (queries in flight get up to a second to finish).
func (r *Resolver) Serve(ctx context.Context) error {
	r.mu.Lock()
	udp, tcp := r.udp, r.tcp
	r.mu.Unlock()
	if udp == nil {
		return errors.New("dns resolver: Serve before Listen")
	}
	handler := dns.HandlerFunc(r.ServeDNS)
	servers := []*dns.Server{
		{PacketConn: udp, Handler: handler, UDPSize: udpReadSize, ReadTimeout: ioTimeout, WriteTimeout: ioTimeout},
		{Listener: tcp, Handler: handler, ReadTimeout: ioTimeout, WriteTimeout: ioTimeout,
			IdleTimeout: func() time.Duration { return tcpIdle }, MaxTCPQueries: tcpMaxQueries},
	}
	errs := make(chan error, len(servers))
	for _, s := range servers {
		go func() { errs <- s.ActivateAndServe() }()
	}
	r.logger.Info("dns resolver serving", "address", udp.LocalAddr().String(), "upstreams", r.upstreams)
	var err error
	select {
	case <-ctx.Done():
	case err = <-errs: // a socket failed: stop the other
		err = fmt.Errorf("dns resolver: %w", err)
	}
	stop, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	for _, s := range servers {
		_ = s.ShutdownContext(stop)
	}
	udp.Close()
	tcp.Close()
	return err
}

// ServeDNS answers one query: a mesh name from the name table, anything
// else from an upstream.
func (r *Resolver) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	if req.Opcode != dns.OpcodeQuery || len(req.Question) != 1 {
		m := new(dns.Msg)
		rcode := dns.RcodeNotImplemented
		if len(req.Question) != 1 {
			rcode = dns.RcodeFormatError
		}
		r.reply(w, req, m.SetRcode(req, rcode), ResultLocal)
		return
	}
	if !r.isReady() {
		r.reply(w, req, new(dns.Msg).SetRcode(req, dns.RcodeServerFailure), ResultFailed)
		return
	}
	q := req.Question[0]
	e := r.names.Load().lookup(dns.CanonicalName(q.Name))
	if !e.mesh {
		r.forward(w, req)
		return
	}
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	if req.IsEdns0() != nil {
		m.SetEdns0(udpReadSize, false)
	}
	inet := q.Qclass == dns.ClassINET || q.Qclass == dns.ClassANY
	hdr := dns.RR_Header{Name: q.Name, Rrtype: q.Qtype, Class: dns.ClassINET, Ttl: r.ttl}
	switch {
	case !e.known:
		m.Rcode = dns.RcodeNameError
	case q.Qtype == dns.TypeA && inet:
		for _, a := range e.addrs {
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: a.AsSlice()})
		}
	case q.Qtype == dns.TypePTR && inet && e.ptr != "":
		m.Answer = append(m.Answer, &dns.PTR{Hdr: hdr, Ptr: e.ptr})
	}
	// Any other type of a known name (AAAA, ...): NOERROR, no answer.
	r.reply(w, req, m, ResultLocal)
}

// isReady reports whether the sidecar had its first configuration
// (Options.Ready), latched.
func (r *Resolver) isReady() bool {
	if r.ready.Load() {
		return true
	}
	if r.opts.Ready != nil && !r.opts.Ready() {
		return false
	}
	r.ready.Store(true)
	return true
}

// forward sends req to the upstreams in order over the query's protocol
// and relays the first answer; SERVFAIL when none answers or too many
// queries are in flight.
func (r *Resolver) forward(w dns.ResponseWriter, req *dns.Msg) {
	resp, err := r.exchange(req, isTCP(w))
	if err != nil {
		r.logger.Warn("dns query failed", "name", req.Question[0].Name, "type", dns.TypeToString[req.Question[0].Qtype], "error", err)
		r.reply(w, req, new(dns.Msg).SetRcode(req, dns.RcodeServerFailure), ResultFailed)
		return
	}
	resp.Id = req.Id
	r.reply(w, req, resp, ResultForwarded)
}

// exchange asks the upstreams in order, holding one of the in-flight
// slots (released before the answer is relayed).
func (r *Resolver) exchange(req *dns.Msg, tcp bool) (*dns.Msg, error) {
	select {
	case r.inFlight <- struct{}{}:
		defer func() { <-r.inFlight }()
	default:
		return nil, fmt.Errorf("not forwarded: %d queries in flight already", cap(r.inFlight))
	}
	client := &dns.Client{Net: "udp", Timeout: r.opts.ForwardTimeout, UDPSize: udpReadSize}
	if tcp {
		client.Net = "tcp"
	}
	var errs []error
	for _, u := range r.upstreams {
		resp, _, err := client.Exchange(req, u)
		if err == nil {
			return resp, nil
		}
		errs = append(errs, fmt.Errorf("upstream %s: %w", u, err))
	}
	return nil, errors.Join(errs...)
}

// reply writes m, truncated to what a UDP client can take (its EDNS0
// buffer size, else 512 bytes: the TC bit tells it to ask again over TCP),
// and counts the query.
func (r *Resolver) reply(w dns.ResponseWriter, req, m *dns.Msg, result string) {
	r.counts[result].Inc()
	if !isTCP(w) {
		size := dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
		}
		m.Truncate(min(size, udpReadSize))
	}
	if err := w.WriteMsg(m); err != nil {
		r.logger.Debug("dns answer not written", "error", err)
	}
}

func isTCP(w dns.ResponseWriter) bool {
	_, ok := w.LocalAddr().(*net.TCPAddr)
	return ok
}
