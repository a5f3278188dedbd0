package web

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/kiln-dev/kiln/builder/uki"
)

// errNoCmdlineRoom says a UKI has no .cmdline section with room for more:
// it was built by a kiln before uki.CmdlineRoom, or without a command line.
var errNoCmdlineRoom = errors.New("the UKI's .cmdline has no room for kiln's parameters")

// ukiWithCmdline returns the UKI in r (size bytes) with extra appended to
// the command line of its .cmdline section, as a reader of the same size:
// the section's bytes and VirtualSize are rewritten in place, within the
// room uki.CmdlineRoom keeps, and the PE checksum is zeroed ("not
// computed"; firmware does not check it). Nothing else changes. It fails
// with errNoCmdlineRoom when the section is missing or too small.
//
// This is how a UKI booted by UEFI HTTP Boot, whose firmware passes no
// command line, gets its boot's token.
func ukiWithCmdline(r io.ReaderAt, size int64, extra string) (*io.SectionReader, error) {
	le := binary.LittleEndian
	hdr := make([]byte, min(size, 64<<10))
	if _, err := r.ReadAt(hdr, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("reading the UKI's headers: %w", err)
	}
	bad := func(what string) error { return fmt.Errorf("the UKI is not a PE image: %s", what) }
	if len(hdr) < 0x40 || string(hdr[:2]) != "MZ" {
		return nil, bad("no MZ header")
	}
	peOff := int(le.Uint32(hdr[0x3c:]))
	if peOff < 0x40 || peOff+24 > len(hdr) || string(hdr[peOff:peOff+4]) != "PE\x00\x00" {
		return nil, bad("no PE signature")
	}
	coff := peOff + 4
	nsec := int(le.Uint16(hdr[coff+2:]))
	optOff := coff + 20
	table := optOff + int(le.Uint16(hdr[coff+16:]))
	if optOff+68 > len(hdr) || table+nsec*40 > len(hdr) {
		return nil, bad("headers past the first 64 KiB")
	}
	type section struct {
		hdr            int // file offset of the section header
		va, vsize, raw uint32
		off            uint32
	}
	var secs []section
	cmd := -1
	for i := range nsec {
		h := table + i*40
		secs = append(secs, section{hdr: h, vsize: le.Uint32(hdr[h+8:]), va: le.Uint32(hdr[h+12:]), raw: le.Uint32(hdr[h+16:]), off: le.Uint32(hdr[h+20:])})
		if strings.TrimRight(string(hdr[h:h+8]), "\x00") == ".cmdline" {
			cmd = i
		}
	}
	if cmd < 0 {
		return nil, errNoCmdlineRoom
	}
	c := secs[cmd]
	// The room: its raw data, up to the next section in memory, at most
	// the kernel's command line.
	room := int64(c.raw)
	for _, s := range secs {
		if s.va > c.va {
			room = min(room, int64(s.va-c.va))
		}
	}
	room = min(room, uki.MaxCmdline)
	if int64(c.off)+int64(c.raw) > size || int64(c.vsize) > int64(c.raw) {
		return nil, bad(".cmdline past the end of the file")
	}
	old := make([]byte, c.vsize)
	if _, err := r.ReadAt(old, int64(c.off)); err != nil {
		return nil, fmt.Errorf("reading the UKI's .cmdline: %w", err)
	}
	line := strings.TrimRight(string(old), " \n\x00") + " " + extra
	if int64(len(line)) > room {
		return nil, fmt.Errorf("%w: %d bytes, room for %d", errNoCmdlineRoom, len(line), room)
	}
	vsize := make([]byte, 4)
	le.PutUint32(vsize, uint32(len(line)))
	return io.NewSectionReader(patchedReaderAt{r, []patch{
		{int64(optOff + 64), make([]byte, 4)}, // CheckSum: not computed
		{int64(c.hdr + 8), vsize},
		{int64(c.off), []byte(line)},
	}}, 0, size), nil
}

// patch is bytes b at offset off.
type patch struct {
	off int64
	b   []byte
}

// patchedReaderAt reads r with patches laid over it.
type patchedReaderAt struct {
	r       io.ReaderAt
	patches []patch
}

func (p patchedReaderAt) ReadAt(b []byte, off int64) (int, error) {
	n, err := p.r.ReadAt(b, off)
	for _, pt := range p.patches {
		lo, hi := max(off, pt.off), min(off+int64(n), pt.off+int64(len(pt.b)))
		if lo < hi {
			copy(b[lo-off:hi-off], pt.b[lo-pt.off:hi-pt.off])
		}
	}
	return n, err
}
