package tftp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"strings"
	"testing"
	"time"
)

// derived from makeTestServer
func makeTestServerWindow(maxWindow int) (*Server, *Client) {
	s, c := makeTestServer(false)
	s.SetMaxWindowSize(maxWindow)
	return s, c
}

func TestWindowSize(t *testing.T) {
	s, c := makeTestServerWindow(16)
	defer s.Shutdown()
	c.SetWindowSize(8)
	c.SetBlockSize(600)
	c.RequestTSize(true)
	// around multiples of a block and of a window
	for _, n := range []int64{0, 1, 599, 600, 601, 8*600 - 1, 8 * 600, 8*600 + 1, 20*600 + 7, 154242} {
		testSendReceive(t, c, n)
	}
}

// derived from TestBlockWrapsAround
func TestWindowBlockWrapsAround(t *testing.T) {
	n := 65535 * 512
	for _, length := range []int{n - 1, n, n + 1} {
		data := make([]byte, length)
		rand.New(rand.NewSource(int64(length))).Read(data)
		w := startWindowServer(t, 16, data)
		c, err := NewClient(w.addr.String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetWindowSize(16)
		wt, err := c.Receive("f", "octet")
		if err != nil {
			t.Fatalf("requesting read: %v", err)
		}
		buf := &bytes.Buffer{}
		if _, err := wt.WriteTo(buf); err != nil {
			t.Fatalf("length %d: read error: %v", length, err)
		}
		if !bytes.Equal(buf.Bytes(), data) {
			t.Errorf("length %d: received %d different bytes", length, buf.Len())
		}
		if err := <-w.done; err != nil {
			t.Errorf("length %d: sending: %v", length, err)
		}
	}
}

func TestWindowHookSuccess(t *testing.T) {
	s, c := makeTestServerWindow(16)
	th := newTestHook()
	s.SetHook(th)
	c.SetWindowSize(16)
	testSendReceive(t, c, 154242)
	s.Shutdown()
	th.Lock()
	defer th.Unlock()
	if th.transfersCompleted != 2 {
		t.Errorf("unexpected completed transfers count: %d", th.transfersCompleted)
	}
}

func TestWindowSizeNegotiation(t *testing.T) {
	for _, tc := range []struct {
		max     int
		ask     string
		blksize string
		want    string // "" if not in the OACK
	}{
		{0, "4", "", ""},
		{1, "4", "", ""},
		{16, "4", "", "4"},
		{16, "16", "", "16"},
		{16, "64", "", "16"},
		{16, "1", "", "1"},
		{16, "0", "", ""},
		{16, "65536", "", ""},
		{16, "x", "", ""},
		{16, "+8", "", "8"},
		{16, "16", "8192", "8"},  // 64 KiB per window
		{64, "64", "1468", "44"}, // 64 KiB per window
		{16, "16", "65464", "1"}, // 64 KiB per window
		{16, "16", "100", "16"},  // invalid blksize: 512
	} {
		t.Run(fmt.Sprintf("max%d_ask%s_blksize%s", tc.max, tc.ask, tc.blksize), func(t *testing.T) {
			w := startWindowServer(t, tc.max, make([]byte, 5000))
			ask := []string{"windowsize", tc.ask, "tsize", "0"}
			if tc.blksize != "" {
				ask = append(ask, "blksize", tc.blksize)
			}
			opts := w.rrq(t, ask...)
			if got := opts["windowsize"]; got != tc.want {
				t.Errorf("OACK windowsize = %q, want %q (OACK %v)", got, tc.want, opts)
			}
			if opts["tsize"] != "5000" {
				t.Errorf("OACK tsize = %q, want 5000", opts["tsize"])
			}
			w.abort(t)
		})
	}
}

// TestWindowAck plays a windowsize 4 client by hand: an ACK inside the
// window moves it, old ACKs are ignored, and on timeout the window is sent
// again from the first unacknowledged block.
func TestWindowAck(t *testing.T) {
	w := startWindowServer(t, 4, make([]byte, 20*512))
	w.s.SetTimeout(300 * time.Millisecond)
	w.s.SetBackoff(func(int) time.Duration { return 0 })
	if opts := w.rrq(t, "windowsize", "4"); opts["windowsize"] != "4" {
		t.Fatalf("OACK %v, want windowsize 4", opts)
	}
	w.ack(t, 0)
	w.expect(t, 1, 2, 3, 4)
	w.ack(t, 2) // blocks 3 and 4 lost: resume at 3
	w.expect(t, 3, 4, 5, 6)
	w.ack(t, 1) // old
	w.ack(t, 2) // duplicate
	w.ack(t, 6)
	w.expect(t, 7, 8, 9, 10)
	// no ACK: the whole window again after the timeout
	w.expect(t, 7, 8, 9, 10)
	w.ack(t, 10)
	w.expect(t, 11, 12, 13, 14)
	w.ack(t, 14)
	w.expect(t, 15, 16, 17, 18)
	w.ack(t, 18)
	w.expect(t, 19, 20, 21) // 21 is the empty last block
	w.ack(t, 21)
	select {
	case err := <-w.done:
		if err != nil {
			t.Errorf("transfer: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("transfer did not finish")
	}
}

// TestWindowAckWrapsAround checks that an ACK inside a window that spans
// block 65535 to 0 acknowledges the right blocks.
func TestWindowAckWrapsAround(t *testing.T) {
	w := startWindowServer(t, 8, make([]byte, (65536+8)*512+100))
	w.rrq(t, "windowsize", "8")
	w.ack(t, 0)
	for b := uint16(0); b < 65528; b += 8 {
		w.expect(t, b+1, b+2, b+3, b+4, b+5, b+6, b+7, b+8)
		w.ack(t, b+8)
	}
	w.expect(t, 65529, 65530, 65531, 65532, 65533, 65534, 65535, 0)
	w.ack(t, 65534)
	w.expect(t, 65535, 0, 1, 2, 3, 4, 5, 6)
	w.ack(t, 65535-8) // old, from before the wrap
	w.ack(t, 0)
	w.expect(t, 1, 2, 3, 4, 5, 6, 7, 8)
	w.ack(t, 8)
	w.expect(t, 9)
	w.ack(t, 9)
	if err := <-w.done; err != nil {
		t.Errorf("transfer: %v", err)
	}
}

func TestTSizeZero(t *testing.T) {
	w := startWindowServer(t, 0, nil)
	if opts := w.rrq(t, "tsize", "0"); opts["tsize"] != "0" {
		t.Errorf("OACK %v, want tsize 0", opts)
	}
	w.abort(t)
}

type codeError struct{ code uint16 }

func (e codeError) Error() string         { return "access violation" }
func (e codeError) TFTPErrorCode() uint16 { return e.code }

func TestErrorCode(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{errors.New("nope"), "code: 1, message: nope"},
		{codeError{2}, "code: 2, message: access violation"},
		{fmt.Errorf("wrapped: %w", codeError{0}), "code: 0, message: wrapped: access violation"},
	} {
		s := NewServer(func(string, io.ReaderFrom) error { return tc.err }, nil)
		conn, err := net.ListenUDP("udp", &net.UDPAddr{})
		if err != nil {
			t.Fatal(err)
		}
		go s.Serve(conn)
		c, err := NewClient(localSystem(conn))
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Receive("f", "octet")
		if err == nil || strings.TrimRight(err.Error(), "\x00") != tc.want {
			t.Errorf("Receive with handler error %v = %v, want %q", tc.err, err, tc.want)
		}
		s.Shutdown()
	}
}

func TestParseRequest(t *testing.T) {
	b := make([]byte, datagramLength)
	n := packRQ(b, opRRQ, "pxelinux.0", "octet", options{"blksize": "1468", "windowsize": "4"})
	op, f, m, o, err := ParseRequest(b[:n])
	if err != nil || op != opRRQ || f != "pxelinux.0" || m != "octet" ||
		o["blksize"] != "1468" || o["windowsize"] != "4" || len(o) != 2 {
		t.Errorf("ParseRequest(RRQ) = %d, %q, %q, %v, %v", op, f, m, o, err)
	}
	n = packRQ(b, opWRQ, "up", "netascii", nil)
	if op, f, m, _, err := ParseRequest(b[:n]); err != nil || op != opWRQ || f != "up" || m != "netascii" {
		t.Errorf("ParseRequest(WRQ) = %d, %q, %q, %v", op, f, m, err)
	}
	for _, p := range [][]byte{nil, {0, 1}, {0, 1, 'f', 'x'}, {0, 4, 0, 1}, {0, 3, 0, 1, 'x'}, {0, 9, 0, 0}} {
		if _, _, _, _, err := ParseRequest(p); err == nil {
			t.Errorf("ParseRequest(%x) = nil error, want error", p)
		}
	}
}

// windowServer serves one file to a hand-played client.
type windowServer struct {
	s    *Server
	conn *net.UDPConn // the client's
	addr *net.UDPAddr // the server's, then the transfer's
	done chan error   // ReadFrom's result
}

func startWindowServer(t *testing.T, maxWindow int, data []byte) *windowServer {
	t.Helper()
	w := &windowServer{done: make(chan error, 1)}
	w.s = NewServer(func(_ string, rf io.ReaderFrom) error {
		rf.(OutgoingTransfer).SetSize(int64(len(data)))
		_, err := rf.ReadFrom(bytes.NewReader(data))
		w.done <- err
		return nil
	}, nil)
	w.s.SetMaxWindowSize(maxWindow)
	// Honour blksize even if the request arrives before Serve has learned
	// the interface MTU.
	w.s.SetBlockSizeNegotiation(false)
	w.s.SetTimeout(time.Second)
	w.s.SetRetries(1)
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	go w.s.Serve(conn)
	t.Cleanup(w.s.Shutdown)
	w.conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.conn.Close() })
	w.addr = conn.LocalAddr().(*net.UDPAddr)
	return w
}

// rrq requests a file with options and returns the OACK's options.
func (w *windowServer) rrq(t *testing.T, opts ...string) options {
	t.Helper()
	o := options{}
	for i := 0; i+1 < len(opts); i += 2 {
		o[opts[i]] = opts[i+1]
	}
	b := make([]byte, datagramLength)
	n := packRQ(b, opRRQ, "f", "octet", o)
	if _, err := w.conn.WriteToUDP(b[:n], w.addr); err != nil {
		t.Fatal(err)
	}
	p := w.read(t)
	oack, ok := p.(pOACK)
	if !ok {
		t.Fatalf("got %T, want OACK", p)
	}
	got, _ := unpackOACK(oack)
	return got
}

func (w *windowServer) read(t *testing.T) interface{} {
	t.Helper()
	b := make([]byte, 65536)
	w.conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, addr, err := w.conn.ReadFromUDP(b)
	if err != nil {
		t.Fatalf("reading: %v", err)
	}
	w.addr = addr
	p, err := parsePacket(b[:n])
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (w *windowServer) ack(t *testing.T, block uint16) {
	t.Helper()
	b := make([]byte, 4)
	binary.BigEndian.PutUint16(b, opACK)
	binary.BigEndian.PutUint16(b[2:], block)
	if _, err := w.conn.WriteToUDP(b, w.addr); err != nil {
		t.Fatal(err)
	}
}

// abort ends the transfer with an ERROR, as a client that only wanted the
// OACK does.
func (w *windowServer) abort(t *testing.T) {
	t.Helper()
	b := make([]byte, datagramLength)
	n := packERROR(b, 8, "enough")
	if _, err := w.conn.WriteToUDP(b[:n], w.addr); err != nil {
		t.Fatal(err)
	}
	<-w.done
}

// expect reads DATA packets and checks their block numbers.
func (w *windowServer) expect(t *testing.T, blocks ...uint16) {
	t.Helper()
	var got []string
	for range blocks {
		p := w.read(t)
		d, ok := p.(pDATA)
		if !ok {
			t.Fatalf("got %T, want DATA", p)
		}
		got = append(got, fmt.Sprint(d.block()))
	}
	if g, want := strings.Join(got, " "), strings.Trim(fmt.Sprint(blocks), "[]"); g != want {
		t.Fatalf("DATA blocks %s, want %s", g, want)
	}
}

// TestWindowReceiverGap plays a windowsize 4 server by hand: the client
// ACKs only the last block of a window, ACKs the last block in order as
// soon as a later one shows a gap, and does so once per gap.
func TestWindowReceiverGap(t *testing.T) {
	srv, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	c, err := NewClient(srv.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetWindowSize(4)
	c.SetTimeout(5 * time.Second) // a timeout would fail the test
	got := make(chan []byte, 1)
	go func() {
		wt, err := c.Receive("f", "octet")
		if err != nil {
			got <- nil
			return
		}
		buf := &bytes.Buffer{}
		wt.WriteTo(buf)
		got <- buf.Bytes()
	}()
	b := make([]byte, 65536)
	srv.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, client, err := srv.ReadFromUDP(b)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, opts, _ := ParseRequest(b[:n]); opts["windowsize"] != "4" {
		t.Fatalf("RRQ options %v, want windowsize 4", opts)
	}
	send := func(p []byte) {
		if _, err := srv.WriteToUDP(p, client); err != nil {
			t.Fatal(err)
		}
	}
	data := func(block uint16) {
		p := make([]byte, 4+512)
		binary.BigEndian.PutUint16(p, opDATA)
		binary.BigEndian.PutUint16(p[2:], block)
		p[4] = byte(block)
		if block == 7 {
			p = p[:5] // the last block
		}
		send(p)
	}
	expectAck := func(block uint16) {
		t.Helper()
		srv.SetReadDeadline(time.Now().Add(time.Second))
		n, _, err := srv.ReadFromUDP(b)
		if err != nil {
			t.Fatalf("waiting for ACK %d: %v", block, err)
		}
		if p, _ := parsePacket(b[:n]); p == nil || binary.BigEndian.Uint16(b) != opACK || p.(pACK).block() != block {
			t.Fatalf("got %x, want ACK %d", b[:n], block)
		}
	}
	b2 := make([]byte, datagramLength)
	send(b2[:packOACK(b2, options{"windowsize": "4"})])
	expectAck(0)
	data(1)
	data(2)
	data(4) // 3 lost
	data(5)
	expectAck(2)
	data(3)
	data(4)
	data(5)
	data(6)
	expectAck(6)
	data(7)
	expectAck(7)
	select {
	case d := <-got:
		if len(d) != 6*512+1 || d[512] != 2 || d[2*512] != 3 || d[6*512] != 7 {
			t.Errorf("received %d bytes, want %d in block order", len(d), 6*512+1)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("client did not finish")
	}
	srv.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, _, err := srv.ReadFromUDP(b); err == nil {
		t.Errorf("extra packet %x", b[:n])
	}
}
