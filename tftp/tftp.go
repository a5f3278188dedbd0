// Package tftp serves boot files read-only over TFTP (RFC 1350) with the
// blksize (RFC 2348), tsize (RFC 2349) and windowsize (RFC 7440) options,
// confined to one directory through os.Root. It wraps github.com/pin/tftp/v3
// (kiln's fork in third_party/pin-tftp, which adds windowsize) and adds path
// confinement, a bound on concurrent transfers and one log line per
// transfer.
package tftp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"time"

	ptftp "github.com/pin/tftp/v3"
)

// Defaults for the zero fields of Config.
const (
	// DefaultTimeout is the per-packet retransmit timeout. pin/tftp's own
	// default is 5s; PXE ROMs on a LAN recover faster with 2s.
	DefaultTimeout = 2 * time.Second
	// DefaultRetries is how many times a packet is retransmitted before the
	// transfer is abandoned.
	DefaultRetries = 5
	// DefaultMaxTransfers is the number of read transfers served at once.
	DefaultMaxTransfers = 64
	// DefaultMaxWindow is the largest windowsize (RFC 7440) granted. OVMF
	// asks for 4. Over loopback, 16 blocks of 1468 bytes (the most an
	// Ethernet MTU allows) move 64 MiB 2 to 3 times faster than lock-step;
	// 32 or 44 gained nothing measurable. 16 blocks hold 23 KiB per
	// transfer.
	DefaultMaxWindow = 16
)

// Config configures a Server. Zero fields take the documented defaults.
type Config struct {
	// Root is the directory served read-only. Required. Symbolic links
	// inside it are followed only when they are relative and stay inside
	// Root (os.Root rules): Debian's /usr/lib/ipxe/ipxe.efi, a link to
	// /boot/ipxe.efi, is refused, so serve a directory of copies.
	Root string
	// Timeout is the per-packet retransmit timeout; zero means DefaultTimeout.
	Timeout time.Duration
	// Retries is the number of retransmits per packet; zero means
	// DefaultRetries.
	Retries int
	// MaxTransfers bounds the read transfers served at once; zero means
	// DefaultMaxTransfers. A request beyond it gets the TFTP error
	// "server busy".
	MaxTransfers int
	// MaxWindow is the largest windowsize (RFC 7440) granted to a client
	// that asks for one: the server then sends that many blocks before
	// waiting for an ACK. Zero means DefaultMaxWindow; 1 turns the option
	// off (every block waits for its ACK, as in RFC 1350). Whatever
	// MaxWindow, the fork caps a window at 64 KiB of data (8 blocks of
	// 8192 bytes, 44 of 1468), which a client's default socket buffer
	// holds; a running transfer keeps one window in memory.
	MaxWindow int
	// Log receives one line per transfer; nil discards.
	Log *slog.Logger
	// Observer, if set, is called once after each request ends, whether it
	// succeeded, failed or was refused. It runs on the transfer's goroutine:
	// it MUST be safe for concurrent use and SHOULD return quickly.
	Observer func(Transfer)
}

// Server serves the files under one directory over TFTP. Create it with New.
type Server struct {
	root     *os.Root
	timeout  time.Duration
	retries  int
	window   int
	log      *slog.Logger
	observer func(Transfer)
	// slots holds one token per running read transfer.
	slots chan struct{}
}

// New validates cfg and opens cfg.Root. The caller MUST call Close when done.
func New(cfg Config) (*Server, error) {
	if cfg.Root == "" {
		return nil, errors.New("tftp root: not set")
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("tftp timeout %v: must not be negative", cfg.Timeout)
	}
	if cfg.Retries < 0 {
		return nil, fmt.Errorf("tftp retries %d: must not be negative", cfg.Retries)
	}
	if cfg.MaxTransfers < 0 {
		return nil, fmt.Errorf("tftp max transfers %d: must not be negative", cfg.MaxTransfers)
	}
	if cfg.MaxWindow < 0 || cfg.MaxWindow > 65535 {
		return nil, fmt.Errorf("tftp max window %d: must be between 0 and 65535", cfg.MaxWindow)
	}
	fi, err := os.Stat(cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("tftp root: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("tftp root %s: not a directory", cfg.Root)
	}
	root, err := os.OpenRoot(cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("tftp root: %w", err)
	}
	s := &Server{
		root:     root,
		timeout:  orDefault(cfg.Timeout, DefaultTimeout),
		retries:  orDefault(cfg.Retries, DefaultRetries),
		window:   orDefault(cfg.MaxWindow, DefaultMaxWindow),
		log:      cfg.Log,
		observer: cfg.Observer,
		slots:    make(chan struct{}, orDefault(cfg.MaxTransfers, DefaultMaxTransfers)),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s, nil
}

// orDefault returns v, or def when v is zero.
func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Serve answers TFTP requests arriving on conn until ctx ends. It then stops
// accepting requests, aborts running transfers at their next block, waits
// for them, closes conn and returns nil. It returns an error only if serving
// could not start.
//
// Serve uses conn for requests only: like any RFC 1350 server, each transfer
// runs on its own ephemeral port (pin/tftp's single-port mode is not used,
// since it caps blksize at 512).
func (s *Server) Serve(ctx context.Context, conn *net.UDPConn) error {
	if conn == nil {
		return errors.New("serving tftp: nil conn")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ps := ptftp.NewServer(
		func(name string, rf io.ReaderFrom) error { return s.read(ctx, name, rf) },
		s.write,
	)
	ps.SetTimeout(s.timeout)
	ps.SetRetries(s.retries)
	ps.SetMaxWindowSize(s.window)
	ps.SetHook(hook{log: s.log})
	// blksize needs nothing here: pin clamps it to the MTU of the interface
	// the request arrived on (from IP_PKTINFO) and honours up to that.

	errc := make(chan error, 1)
	go func() { errc <- ps.Serve(conn) }()
	var err error
	select {
	case <-ctx.Done():
	case perr := <-errc:
		// pin's Serve only returns by itself when it cannot start.
		if perr == nil {
			perr = errors.New("stopped unexpectedly")
		}
		err = fmt.Errorf("serving tftp on %s: %w", conn.LocalAddr(), perr)
	}
	cancel()
	ps.Shutdown() // closes conn, waits for running transfers
	if err == nil {
		<-errc
	}
	// Shutdown does not close conn when it runs before pin's Serve stored it.
	conn.Close()
	return err
}

// Close releases the served directory. Call it after Serve has returned.
func (s *Server) Close() error {
	return s.root.Close()
}

// BUG(kiln): pin/tftp starts a goroutine and opens a UDP socket (plus two
// 516-byte buffers) for every well-formed request before the read handler
// can refuse it, so beyond MaxTransfers each request still costs a
// short-lived goroutine and socket that send "server busy" and end. What
// MaxTransfers bounds is the transfers that hold a file open, a slot and a
// window of at most 64 KiB for their whole length.

// BUG(kiln): slots are shared by all clients: MaxTransfers clients that send
// a request and vanish hold every slot until pin gives up on them (see the
// stalled-client note below), and meanwhile everyone else is told "server
// busy". There is no per-client limit.

// BUG(kiln): a stalled client keeps its transfer alive until pin gives up,
// about (Retries+1)*Timeout plus up to Retries seconds of pin's random
// backoff, and Serve waits for it after ctx ends. Transfers that are moving
// stop at their next block.

// BUG(kiln): pin/tftp learns the interface MTU, and so the largest blksize,
// from IP_PKTINFO, which it enables only once Serve runs. A request already
// queued on conn before that is negotiated down to blksize 512; later
// requests are not affected.

// BUG(kiln): with a window, a lost first block of a window costs a whole
// Timeout: the fork ignores the client's ACK of the block before the window
// (it cannot tell it from a duplicate), and resends the window when the
// timeout expires.

// BUG(kiln): pin/tftp matches option names case-sensitively, so a client
// sending "BLKSIZE" (RFC 2347 says names are case-insensitive) gets no
// OACK and 512-byte blocks.

// BUG(kiln): if conn is closed by anyone but Serve, pin's read loop spins
// until ctx ends instead of returning an error.
