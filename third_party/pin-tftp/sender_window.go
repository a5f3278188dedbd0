package tftp

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
)

// maxWindowBytes bounds the data of one window, whatever the windowsize
// asked: a window arrives in one burst, and the default socket receive
// buffer of a client (208 KiB on Linux, counting per-packet overhead)
// overflowed with 16 blocks of 8192 bytes, losing the tail of every window
// until a timeout. It also bounds the memory of a transfer.
const maxWindowBytes = 64 << 10

// readFromWindow is ReadFrom once a windowsize (RFC 7440) greater than 1
// was negotiated. It sends up to s.window blocks, then waits for an ACK.
// An ACK of a block inside the window acknowledges every block up to it,
// and the next window starts right after it (RFC 7440 section 4). On
// timeout the window is sent again from the first unacknowledged block.
// Block numbers wrap around from 65535 to 0, as in ReadFrom.
func readFromWindow(s *sender, r io.Reader) (n int64, err error) {
	// blocks holds the unacknowledged blocks, oldest first: blocks[i] is
	// the DATA packet of block s.block+i. free holds spare buffers.
	blocks := make([][]byte, 0, s.window)
	var free [][]byte
	last := false // the last (short) block has been read into blocks
	s.block = 1   // start data transmission with block 1
	for {
		for !last && len(blocks) < s.window {
			var b []byte
			if k := len(free); k > 0 {
				b, free = free[k-1], free[:k-1]
			} else {
				b = make([]byte, len(s.send))
			}
			l, err := io.ReadFull(r, b[4:])
			n += int64(l)
			if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
				s.abort(err)
				return n, err
			}
			binary.BigEndian.PutUint16(b[0:2], opDATA)
			binary.BigEndian.PutUint16(b[2:4], s.block+uint16(len(blocks)))
			blocks = append(blocks, b[:4+l])
			last = l < len(b)-4
		}
		acked, err := s.sendWindowWithRetry(blocks)
		if err != nil {
			s.abort(err)
			return n, err
		}
		for _, b := range blocks[:acked] {
			free = append(free, b[:cap(b)])
		}
		blocks = append(blocks[:0], blocks[acked:]...)
		s.block += uint16(acked)
		if last && len(blocks) == 0 {
			if s.hook != nil {
				s.hook.OnSuccess(s.buildTransferStats())
			}
			return n, nil
		}
	}
}

// derived from sendWithRetry()
func (s *sender) sendWindowWithRetry(blocks [][]byte) (int, error) {
	s.retry.reset()
	for {
		acked, err := s.sendWindow(blocks)
		if _, ok := err.(net.Error); ok && s.retry.count() < s.retries {
			s.retry.backoff()
			continue
		}
		return acked, err
	}
}

// sendWindow sends blocks and returns how many of them the peer
// acknowledged, at least one. ACKs of earlier blocks (duplicates, or the
// ACK of the block before the window) are ignored: the window is sent
// again when the timeout expires.
//
// derived from sendDatagram()
func (s *sender) sendWindow(blocks [][]byte) (int, error) {
	err := s.conn.setDeadline(s.timeout)
	if err != nil {
		return 0, err
	}
	for _, b := range blocks {
		err = s.conn.sendTo(b, s.addr)
		if err != nil {
			return 0, err
		}
		s.datagramsSent++
	}
	for {
		n, addr, err := s.conn.readFrom(s.receive)
		if err != nil {
			return 0, err
		}
		if !addr.IP.Equal(s.addr.IP) || (s.tid != 0 && addr.Port != s.tid) {
			continue
		}
		p, err := parsePacket(s.receive[:n])
		if err != nil {
			continue
		}
		s.tid = addr.Port
		switch p := p.(type) {
		case pACK:
			// Block s.block-1+k acknowledges blocks[:k]; uint16
			// arithmetic takes care of the wrap around.
			k := int(p.block() - (s.block - 1))
			if k >= 1 && k <= len(blocks) {
				s.datagramsAcked++
				return k, nil
			}
		case pERROR:
			return 0, fmt.Errorf("sending block %d: code=%d, error: %s",
				s.block, p.code(), p.message())
		}
	}
}
