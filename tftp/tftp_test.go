package tftp

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	ptftp "github.com/pin/tftp/v3"

	"github.com/kiln-dev/kiln/internal/testenv"
)

// testServer is a Server running on 127.0.0.1:0.
type testServer struct {
	*Server
	addr      string
	logs      *testenv.SyncBuffer
	transfers chan Transfer
	cancel    context.CancelFunc // ends Serve's context
	stop      func() error       // cancels Serve and returns its result
}

// startServer runs a Server for cfg until the test ends. Log and Observer are
// set by the helper.
func startServer(t *testing.T, cfg Config) *testServer {
	t.Helper()
	ts := &testServer{logs: &testenv.SyncBuffer{}, transfers: make(chan Transfer, 128)}
	cfg.Log = slog.New(slog.NewTextHandler(io.MultiWriter(t.Output(), ts.logs),
		&slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.Observer = func(tr Transfer) { ts.transfers <- tr }
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%+v) = %v", cfg, err)
	}
	ts.Server = s
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ts.addr = conn.LocalAddr().String()
	ctx, cancel := context.WithCancel(context.Background())
	ts.cancel = cancel
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, conn) }()
	waitPktinfo(t, conn)
	var once sync.Once
	var serveErr error
	ts.stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case serveErr = <-done:
			case <-time.After(30 * time.Second):
				serveErr = errors.New("Serve did not return 30s after cancel")
			}
		})
		return serveErr
	}
	t.Cleanup(func() {
		if err := ts.stop(); err != nil {
			t.Errorf("Serve = %v, want nil", err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("Close = %v", err)
		}
	})
	return ts
}

// waitPktinfo waits until pin's Serve has enabled IP_PKTINFO on conn. A
// request queued before that carries no interface, and pin then caps its
// blksize at 512.
func waitPktinfo(t testing.TB, conn *net.UDPConn) {
	t.Helper()
	rc, err := conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	for range 1000 {
		on := 0
		rc.Control(func(fd uintptr) {
			on, _ = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_PKTINFO)
		})
		if on != 0 {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("Serve did not enable IP_PKTINFO within 5s")
}

// next returns the next transfer the Observer saw.
func (ts *testServer) next(t *testing.T) Transfer {
	t.Helper()
	select {
	case tr := <-ts.transfers:
		return tr
	case <-time.After(20 * time.Second):
		t.Fatal("no transfer observed within 20s")
		return Transfer{}
	}
}

func (ts *testServer) client(t *testing.T) *ptftp.Client {
	t.Helper()
	c, err := ptftp.NewClient(ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetTimeout(2 * time.Second)
	c.SetRetries(2)
	return c
}

// get downloads name with c and returns the data and the tsize the server
// reported (-1 if none).
func get(c *ptftp.Client, name string) ([]byte, int64, error) {
	wt, err := c.Receive(name, "octet")
	if err != nil {
		return nil, -1, err
	}
	size := int64(-1)
	if n, ok := wt.(ptftp.IncomingTransfer).Size(); ok {
		size = n
	}
	var buf bytes.Buffer
	_, err = wt.WriteTo(&buf)
	return buf.Bytes(), size, err
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestServeFile(t *testing.T) {
	root := t.TempDir()
	data := make([]byte, 300_001) // not a multiple of any block size below
	rand.Read(data)
	writeFile(t, filepath.Join(root, "undionly.kpxe"), data)
	ts := startServer(t, Config{Root: root})

	for _, blksize := range []int{0, 1468, 8192} {
		for _, tsize := range []bool{false, true} {
			c := ts.client(t)
			c.SetBlockSize(blksize)
			c.RequestTSize(tsize)
			got, size, err := get(c, "undionly.kpxe")
			if err != nil {
				t.Fatalf("blksize %d tsize %v: get = %v", blksize, tsize, err)
			}
			if !bytes.Equal(got, data) {
				t.Errorf("blksize %d tsize %v: got %d bytes, want %d identical bytes", blksize, tsize, len(got), len(data))
			}
			wantSize := int64(-1)
			if tsize {
				wantSize = int64(len(data))
			}
			if size != wantSize {
				t.Errorf("blksize %d tsize %v: tsize = %d, want %d", blksize, tsize, size, wantSize)
			}
			tr := ts.next(t)
			if tr.Err != nil || tr.Bytes != int64(len(data)) || tr.File != "undionly.kpxe" {
				t.Errorf("blksize %d tsize %v: observed %+v, want %d bytes, no error", blksize, tsize, tr, len(data))
			}
		}
	}
	if !strings.Contains(ts.logs.String(), "level=INFO msg=sent") {
		t.Errorf("log has no INFO sent line:\n%s", ts.logs)
	}
}

func TestWriteRefused(t *testing.T) {
	root := t.TempDir()
	ts := startServer(t, Config{Root: root})
	_, err := ts.client(t).Send("upload", "octet")
	if err == nil || !strings.Contains(err.Error(), "access violation") {
		t.Errorf("Send(upload) = %v, want access violation", err)
	}
	if tr := ts.next(t); !errors.Is(tr.Err, ErrAccess) {
		t.Errorf("observed %+v, want ErrAccess", tr)
	}
	if _, err := os.Stat(filepath.Join(root, "upload")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Stat(upload) = %v, want not exist", err)
	}
}

func TestServeStopsOnCancel(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "f"), []byte("hello"))
	ts := startServer(t, Config{Root: root})
	if _, _, err := get(ts.client(t), "f"); err != nil {
		t.Fatalf("get(f) = %v", err)
	}
	start := time.Now()
	if err := ts.stop(); err != nil {
		t.Fatalf("Serve = %v, want nil", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Serve took %v to return after cancel", d)
	}
	// The socket is closed: a new request gets no answer.
	c := ts.client(t)
	c.SetTimeout(200 * time.Millisecond)
	c.SetRetries(1)
	if _, _, err := get(c, "f"); err == nil {
		t.Error("get(f) after Serve returned succeeded")
	}
}

func TestServeCancelledBeforeStart(t *testing.T) {
	s, err := New(Config{Root: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Serve(ctx, conn); err != nil {
		t.Errorf("Serve(cancelled) = %v, want nil", err)
	}
	if _, _, err := conn.ReadFrom(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("ReadFrom after Serve = %v, want net.ErrClosed", err)
	}
}

func TestNew(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	writeFile(t, file, nil)
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"no root", Config{}},
		{"missing root", Config{Root: filepath.Join(dir, "missing")}},
		{"root is a file", Config{Root: file}},
		{"negative timeout", Config{Root: dir, Timeout: -time.Second}},
		{"negative retries", Config{Root: dir, Retries: -1}},
		{"negative max transfers", Config{Root: dir, MaxTransfers: -1}},
		{"negative max window", Config{Root: dir, MaxWindow: -1}},
		{"max window too large", Config{Root: dir, MaxWindow: 65536}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if s, err := New(tc.cfg); err == nil {
				s.Close()
				t.Errorf("New(%+v) = nil error, want error", tc.cfg)
			}
		})
	}
	s, err := New(Config{Root: dir})
	if err != nil {
		t.Fatalf("New(%q) = %v", dir, err)
	}
	defer s.Close()
	if s.timeout != DefaultTimeout || s.retries != DefaultRetries || cap(s.slots) != DefaultMaxTransfers ||
		s.window != DefaultMaxWindow {
		t.Errorf("New defaults = %v, %d, %d, %d; want %v, %d, %d, %d", s.timeout, s.retries, cap(s.slots), s.window,
			DefaultTimeout, DefaultRetries, DefaultMaxTransfers, DefaultMaxWindow)
	}
}
