package iso

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"time"
)

// ISO 9660 layout (ECMA-119 4th edition; Rock Ridge RRIP 1.12 over SUSP
// 1.12).
const (
	isoBlock      = 2048
	vdStart       = 16 // first volume descriptor, in blocks
	vdPrimary     = 1
	vdSupplement  = 2
	vdTerminator  = 255
	vdRootRecord  = 156 // offset of the root directory record in a PVD/SVD
	vdCreation    = 813 // offsets of the 17-byte dates in a PVD/SVD
	vdModified    = 830
	vdExpiration  = 847
	vdEffective   = 864
	recDate       = 18 // offset of the 7-byte recording date in a record
	recFlags      = 25
	recNameLen    = 32
	recName       = 33
	flagDirectory = 0x02
	maxVDs        = 64
	maxDirs       = 1 << 16
	maxDirSize    = 16 << 20
)

// normalizeISO makes an ISO image that go-diskfs wrote reproducible. It
// reads the volume descriptors from block 16 to the terminator and, in each
// primary and supplementary one, rewrites:
//
//   - the volume creation and modification dates (8.4.26-27) to epoch,
//   - the volume expiration and effective dates (8.4.28-29) to "not
//     specified" (digits '0', offset 0), where go-diskfs writes the build
//     time;
//
// then walks the directory tree from the root record and, in every
// directory record (including "." and ".." and the root record of the
// descriptor), rewrites:
//
//   - the recording date (9.1.5) to epoch,
//   - in the System Use area, following CE continuation areas: every Rock
//     Ridge TF time stamp to epoch; in PX, the user and group ids to 0 and
//     the link count to 1 for files and 2 plus the number of
//     subdirectories for directories (go-diskfs copies them from the
//     staging files, which vary with the builder and the file system).
//
// Nothing else changes: names, extents, sizes, modes and PX serial numbers
// come from the tree's sorted order and contents.
func normalizeISO(f readWriterAt) error {
	n := isoNormalizer{f: f, seen: map[uint32]bool{}}
	vd := make([]byte, isoBlock)
	for i := int64(0); ; i++ {
		if i == maxVDs {
			return errors.New("no volume descriptor set terminator")
		}
		off := (vdStart + i) * isoBlock
		if _, err := f.ReadAt(vd, off); err != nil {
			return fmt.Errorf("reading volume descriptor %d: %w", i, err)
		}
		if string(vd[1:6]) != "CD001" {
			return fmt.Errorf("volume descriptor %d: no CD001 identifier", i)
		}
		if vd[0] == vdTerminator {
			return nil
		}
		if vd[0] != vdPrimary && vd[0] != vdSupplement {
			continue
		}
		copy(vd[vdCreation:], isoDate17(epoch))
		copy(vd[vdModified:], isoDate17(epoch))
		copy(vd[vdExpiration:], isoDate17(time.Time{}))
		copy(vd[vdEffective:], isoDate17(time.Time{}))
		root := vd[vdRootRecord : vdRootRecord+34]
		copy(root[recDate:], isoDate7(epoch))
		if _, err := f.WriteAt(vd, off); err != nil {
			return err
		}
		if err := n.root(root); err != nil {
			return fmt.Errorf("volume descriptor %d: %w", i, err)
		}
	}
}

// isoNormalizer rewrites the directory tree of one ISO image.
type isoNormalizer struct {
	f        readWriterAt
	suspSkip int             // SUSP SP len_skp, from the root's "." record
	seen     map[uint32]bool // directory extents done
	ceLeft   int             // continuation areas left for this record
}

// maxCE bounds the continuation areas of one record.
const maxCE = 16

// record is a directory record inside a directory extent.
type record struct {
	off    int // in the extent
	dir    bool
	dotdot int // 0: a named entry, 1: ".", 2: ".."
	extent uint32
	size   uint32
}

// root walks the tree of the volume whose root directory record is r. The
// root record in the descriptor has no System Use area to rewrite.
func (n *isoNormalizer) root(r []byte) error {
	extent := binary.LittleEndian.Uint32(r[2:])
	size := binary.LittleEndian.Uint32(r[10:])
	if n.seen[extent] {
		return nil
	}
	_, err := n.dir(extent, size, 0, true)
	return err
}

// dir rewrites the directory at extent and, first, its subdirectories.
// parentLinks is the link count of its parent (0 for the root, whose ".."
// is itself). It returns its own link count.
func (n *isoNormalizer) dir(extent, size uint32, parentLinks uint32, isRoot bool) (uint32, error) {
	if len(n.seen) >= maxDirs {
		return 0, errors.New("too many directories")
	}
	n.seen[extent] = true
	if size > maxDirSize {
		return 0, fmt.Errorf("directory at block %d: %d bytes", extent, size)
	}
	b := make([]byte, (int(size)+isoBlock-1)/isoBlock*isoBlock)
	if _, err := n.f.ReadAt(b, int64(extent)*isoBlock); err != nil {
		return 0, fmt.Errorf("reading directory at block %d: %w", extent, err)
	}
	recs, err := parseRecords(b[:size])
	if err != nil {
		return 0, fmt.Errorf("directory at block %d: %w", extent, err)
	}
	if isRoot {
		n.suspSkip = 0
		if len(recs) > 0 && recs[0].dotdot == 1 {
			n.suspSkip = spSkip(systemUse(b, recs[0], 0))
		}
	}
	links := uint32(2)
	for _, r := range recs {
		if r.dir && r.dotdot == 0 {
			links++
		}
	}
	if isRoot {
		parentLinks = links
	}
	for _, r := range recs {
		var nlink uint32 = 1
		switch {
		case r.dotdot == 1:
			nlink = links
		case r.dotdot == 2:
			nlink = parentLinks
		case r.dir:
			if n.seen[r.extent] {
				return 0, fmt.Errorf("directory at block %d: loop at block %d", extent, r.extent)
			}
			if nlink, err = n.dir(r.extent, r.size, links, false); err != nil {
				return 0, err
			}
		}
		rec := b[r.off : r.off+int(b[r.off])]
		copy(rec[recDate:], isoDate7(epoch))
		skip := n.suspSkip
		if isRoot && r.dotdot == 1 {
			skip = 0 // SP's own record (SUSP 5.3)
		}
		n.ceLeft = maxCE
		if err := n.susp(systemUse(b, r, skip), nlink); err != nil {
			return 0, fmt.Errorf("directory at block %d, record at %d: %w", extent, r.off, err)
		}
	}
	if _, err := n.f.WriteAt(b, int64(extent)*isoBlock); err != nil {
		return 0, err
	}
	return links, nil
}

// parseRecords lists the directory records of a directory extent. A
// record never crosses a block; a zero length byte pads to the next block.
func parseRecords(b []byte) ([]record, error) {
	var recs []record
	for off := 0; off < len(b); {
		l := int(b[off])
		if l == 0 {
			off = (off/isoBlock + 1) * isoBlock
			continue
		}
		if l < recName+1 || off+l > len(b) || off/isoBlock != (off+l-1)/isoBlock {
			return nil, fmt.Errorf("bad record length %d at %d", l, off)
		}
		nl := int(b[off+recNameLen])
		if recName+nl > l {
			return nil, fmt.Errorf("bad name length %d at %d", nl, off)
		}
		r := record{
			off:    off,
			dir:    b[off+recFlags]&flagDirectory != 0,
			extent: binary.LittleEndian.Uint32(b[off+2:]),
			size:   binary.LittleEndian.Uint32(b[off+10:]),
		}
		if nl == 1 && b[off+recName] <= 1 {
			r.dotdot = int(b[off+recName]) + 1
		}
		recs = append(recs, r)
		off += l
	}
	return recs, nil
}

// systemUse is the System Use area of record r in the extent b: after the
// name and its padding byte, and after skip bytes (SUSP len_skp).
func systemUse(b []byte, r record, skip int) []byte {
	l := int(b[r.off])
	nl := int(b[r.off+recNameLen])
	start := recName + nl + (1 - nl%2) + skip
	if start >= l {
		return nil
	}
	return b[r.off+start : r.off+l]
}

// spSkip is len_skp of a SUSP SP entry at the start of su, or 0.
func spSkip(su []byte) int {
	if len(su) >= 7 && string(su[:2]) == "SP" && su[2] == 7 && su[4] == 0xbe && su[5] == 0xef {
		return int(su[6])
	}
	return 0
}

// susp rewrites the SUSP entries in su (SUSP 1.12 section 4): TF times,
// PX owner and link count, and follows CE to continuation areas.
func (n *isoNormalizer) susp(su []byte, nlink uint32) error {
	for len(su) >= 4 {
		sig, l := string(su[:2]), int(su[2])
		if su[0] == 0 && su[1] == 0 {
			return nil // padding
		}
		if l < 4 || l > len(su) {
			return fmt.Errorf("bad SUSP entry %q length %d", sig, l)
		}
		e := su[:l]
		switch sig {
		case "ST":
			return nil
		case "TF":
			if err := rewriteTF(e); err != nil {
				return err
			}
		case "PX":
			if l < 36 {
				return fmt.Errorf("short PX entry: %d bytes", l)
			}
			putBoth32(e[12:], nlink)
			putBoth32(e[20:], 0)
			putBoth32(e[28:], 0)
		case "CE":
			if l < 28 {
				return fmt.Errorf("short CE entry: %d bytes", l)
			}
			if n.ceLeft--; n.ceLeft < 0 {
				return errors.New("too many SUSP continuation areas")
			}
			if err := n.continuation(e, nlink); err != nil {
				return err
			}
		}
		su = su[l:]
	}
	return nil
}

// continuation rewrites the continuation area that CE entry e points to.
func (n *isoNormalizer) continuation(e []byte, nlink uint32) error {
	block := binary.LittleEndian.Uint32(e[4:])
	offset := binary.LittleEndian.Uint32(e[12:])
	length := binary.LittleEndian.Uint32(e[20:])
	if uint64(offset)+uint64(length) > isoBlock {
		return fmt.Errorf("bad CE area: offset %d length %d", offset, length)
	}
	at := int64(block)*isoBlock + int64(offset)
	area := make([]byte, length)
	if _, err := n.f.ReadAt(area, at); err != nil {
		return fmt.Errorf("reading CE area at block %d: %w", block, err)
	}
	if err := n.susp(area, nlink); err != nil {
		return err
	}
	_, err := n.f.WriteAt(area, at)
	return err
}

// rewriteTF sets every time stamp of the Rock Ridge TF entry e (RRIP 4.1.6)
// to epoch: one per flag bit 0-6, 7 bytes each, or 17 with bit 7 (LONG_FORM).
func rewriteTF(e []byte) error {
	if len(e) < 5 {
		return errors.New("short TF entry")
	}
	flags := e[4]
	size, stamp := 7, isoDate7(epoch)
	if flags&0x80 != 0 {
		size, stamp = 17, isoDate17(epoch)
	}
	count := bits.OnesCount8(flags & 0x7f)
	if len(e) < 5+count*size {
		return fmt.Errorf("short TF entry: %d bytes for %d stamps", len(e), count)
	}
	for i := 0; i < count; i++ {
		copy(e[5+i*size:], stamp)
	}
	return nil
}

// putBoth32 writes v in both-byte orders (ECMA-119 7.3.3).
func putBoth32(b []byte, v uint32) {
	binary.LittleEndian.PutUint32(b, v)
	binary.BigEndian.PutUint32(b[4:], v)
}

// isoDate7 is t in the 7-byte directory record format (ECMA-119 9.1.5),
// in UTC.
func isoDate7(t time.Time) []byte {
	t = t.UTC()
	return []byte{byte(t.Year() - 1900), byte(t.Month()), byte(t.Day()),
		byte(t.Hour()), byte(t.Minute()), byte(t.Second()), 0}
}

// isoDate17 is t in the 17-byte volume descriptor format (ECMA-119
// 8.4.26.1), in UTC; the zero time is "not specified".
func isoDate17(t time.Time) []byte {
	if t.IsZero() {
		return append(bytes.Repeat([]byte{'0'}, 16), 0)
	}
	t = t.UTC()
	return append([]byte(fmt.Sprintf("%04d%02d%02d%02d%02d%02d%02d",
		t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), t.Nanosecond()/1e7)), 0)
}
