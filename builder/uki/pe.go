package uki

import (
	"bytes"
	"debug/pe"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Offsets into a PE image (Microsoft PE/COFF specification, "PE Format").
const (
	offLfanew = 0x3c // in the MS-DOS header: file offset of the "PE\0\0" signature

	// In the COFF file header, which follows the 4-byte signature.
	coffNumberOfSections     = 2
	coffSizeOfOptionalHeader = 16
	coffHeaderLen            = 20

	// In the optional header; the same in PE32 and PE32+.
	optSizeOfInitializedData = 8
	optSectionAlignment      = 32
	optFileAlignment         = 36
	optSizeOfImage           = 56
	optSizeOfHeaders         = 60
	optCheckSum              = 64
	optSubsystem             = 68

	magicPE32Plus              = 0x20b
	subsystemEFIApplication    = 10
	sectionHeaderLen           = 40
	dataDirSecurity            = 4 // the Authenticode certificate table
	maxStubSize                = 16 << 20
	scnInitializedDataReadOnly = pe.IMAGE_SCN_CNT_INITIALIZED_DATA | pe.IMAGE_SCN_MEM_READ
)

// section is one section appended to the stub.
type section struct {
	name string    // at most 8 bytes
	size int64     // content length, the section's VirtualSize
	src  io.Reader // the content
	path string    // where src comes from, for errors; "" if not a file
	// reserve, if larger than size, is the room the section takes in the
	// file and in memory, zero past size: its content can later grow in
	// place up to reserve bytes (see CmdlineRoom).
	reserve int64

	va, off uint32 // VirtualAddress and PointerToRawData
	rawSize uint32 // SizeOfRawData: size rounded up to FileAlignment
}

// stub is a parsed systemd-stub: its bytes and the header fields the
// layout needs.
type stub struct {
	b           []byte
	machine     uint16
	optOff      int // file offset of the optional header
	tableEnd    int // file offset just past the last section header
	room        int // first byte the section table must not reach
	sectAlign   uint32
	fileAlign   uint32
	imageEnd    uint64 // first VirtualAddress past every section and SizeOfImage
	initialized uint32 // SizeOfInitializedData
}

// parseStub checks that b is a PE32+ EFI application that the sections of
// a UKI can be appended to, and returns its layout.
func parseStub(b []byte) (*stub, error) {
	f, err := pe.NewFile(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("not a PE image: %w", err)
	}
	defer f.Close()
	oh, ok := f.OptionalHeader.(*pe.OptionalHeader64)
	if !ok || oh.Magic != magicPE32Plus {
		return nil, errors.New("not a PE32+ (64-bit) image")
	}
	if oh.Subsystem != subsystemEFIApplication {
		return nil, fmt.Errorf("subsystem is %d, want %d (EFI application)", oh.Subsystem, subsystemEFIApplication)
	}
	if len(oh.DataDirectory) > dataDirSecurity && oh.DataDirectory[dataDirSecurity].Size != 0 {
		return nil, errors.New("image is signed (it has a certificate table); use an unsigned stub and sign the UKI instead")
	}
	sa, fa := oh.SectionAlignment, oh.FileAlignment
	if !pow2(fa) || fa < 512 || fa > 64<<10 || !pow2(sa) || sa < fa {
		return nil, fmt.Errorf("bad alignments: SectionAlignment %#x, FileAlignment %#x", sa, fa)
	}

	s := &stub{b: b, machine: f.Machine, sectAlign: sa, fileAlign: fa, initialized: oh.SizeOfInitializedData}
	peOff := int(binary.LittleEndian.Uint32(b[offLfanew:]))
	s.optOff = peOff + 4 + coffHeaderLen
	s.tableEnd = s.optOff + int(f.SizeOfOptionalHeader) + len(f.Sections)*sectionHeaderLen
	s.room = min(int(oh.SizeOfHeaders), len(b))
	s.imageEnd = uint64(oh.SizeOfImage)
	for _, sec := range f.Sections {
		switch sec.Name {
		case ".osrel", ".cmdline", ".linux", ".initrd":
			return nil, fmt.Errorf("image already has a %s section: is it a UKI rather than a stub?", sec.Name)
		}
		if sec.Size > 0 {
			s.room = min(s.room, int(sec.Offset))
			if int64(sec.Offset)+int64(sec.Size) > int64(len(b)) {
				return nil, fmt.Errorf("section %s runs past the end of the file", sec.Name)
			}
		}
		end := uint64(sec.VirtualAddress) + uint64(max(sec.VirtualSize, sec.Size))
		s.imageEnd = max(s.imageEnd, end)
	}
	if s.tableEnd > s.room {
		return nil, fmt.Errorf("section table ends at %#x, past the headers' end %#x", s.tableEnd, s.room)
	}
	return s, nil
}

// layout places secs after the stub's sections, in order: each
// VirtualAddress SectionAlignment-aligned after the previous section, each
// file offset FileAlignment-aligned after the stub's last byte (any data
// past the stub's sections, such as its COFF symbol table, stays where it
// is). It returns the new SizeOfImage.
func (s *stub) layout(secs []section) (uint32, error) {
	need := s.tableEnd + len(secs)*sectionHeaderLen
	if need > s.room {
		return 0, fmt.Errorf("no room for %d more section headers: they would end at %#x, but the headers end at %#x", len(secs), need, s.room)
	}
	for i := s.tableEnd; i < need; i++ {
		if s.b[i] != 0 {
			return 0, fmt.Errorf("no room for %d more section headers: byte %#x after the section table is in use", len(secs), i)
		}
	}
	va := alignUp(s.imageEnd, uint64(s.sectAlign))
	off := alignUp(uint64(len(s.b)), uint64(s.fileAlign))
	for i := range secs {
		sec := &secs[i]
		span := uint64(max(sec.size, sec.reserve))
		raw := alignUp(span, uint64(s.fileAlign))
		if va+raw > 1<<32-1 || off+raw > 1<<32-1 {
			return 0, fmt.Errorf("section %s (%d bytes) does not fit a PE image's 4 GiB", sec.name, sec.size)
		}
		sec.va, sec.off, sec.rawSize = uint32(va), uint32(off), uint32(raw)
		va = alignUp(va+span, uint64(s.sectAlign))
		off += raw
	}
	if va > 1<<32-1 {
		return 0, errors.New("image does not fit a PE image's 4 GiB")
	}
	return uint32(va), nil
}

// header returns a copy of the stub with secs (laid out) added to its
// section table and NumberOfSections, SizeOfImage and
// SizeOfInitializedData updated. The checksum is zeroed: the caller
// computes it over the whole file.
func (s *stub) header(secs []section, sizeOfImage uint32) []byte {
	b := bytes.Clone(s.b)
	le := binary.LittleEndian
	coff := s.optOff - coffHeaderLen
	le.PutUint16(b[coff+coffNumberOfSections:], le.Uint16(b[coff+coffNumberOfSections:])+uint16(len(secs)))
	init := s.initialized
	for i, sec := range secs {
		h := b[s.tableEnd+i*sectionHeaderLen:][:sectionHeaderLen]
		copy(h[0:8], sec.name)
		le.PutUint32(h[8:], uint32(sec.size)) // VirtualSize
		le.PutUint32(h[12:], sec.va)
		le.PutUint32(h[16:], sec.rawSize)
		le.PutUint32(h[20:], sec.off)
		// PointerToRelocations, PointerToLinenumbers and their counts stay 0.
		le.PutUint32(h[36:], scnInitializedDataReadOnly)
		init += sec.rawSize
	}
	le.PutUint32(b[s.optOff+optSizeOfInitializedData:], init)
	le.PutUint32(b[s.optOff+optSizeOfImage:], sizeOfImage)
	le.PutUint32(b[s.optOff+optCheckSum:], 0)
	return b
}

// checksumOffset returns the file offset of the optional header's CheckSum.
func (s *stub) checksumOffset() int64 { return int64(s.optOff + optCheckSum) }

// peChecksum computes the PE image checksum incrementally, as
// CheckSumMappedFile in Windows' imagehlp does: the one's-complement-style
// sum of the file's little-endian 16-bit words (a trailing odd byte padded
// with zero), folded to 16 bits, plus the file's length. The CheckSum field
// itself must read as zero while it is summed.
type peChecksum struct {
	sum  uint64
	n    int64
	odd  bool // a byte of the current word is pending in lo
	lo   byte
	fold int // words added since the last fold
}

// Write adds p to the sum; it never fails.
func (c *peChecksum) Write(p []byte) (int, error) {
	n := len(p)
	c.n += int64(n)
	if c.odd && len(p) > 0 {
		c.sum += uint64(c.lo) | uint64(p[0])<<8
		c.odd, p = false, p[1:]
	}
	for len(p) >= 2 {
		c.sum += uint64(binary.LittleEndian.Uint16(p))
		p = p[2:]
		// Fold now and then, long before 2^64 could overflow.
		if c.fold++; c.fold == 1<<30 {
			c.sum, c.fold = fold16(c.sum), 0
		}
	}
	if len(p) == 1 {
		c.odd, c.lo = true, p[0]
	}
	return n, nil
}

// Sum returns the checksum of the bytes written so far.
func (c *peChecksum) Sum() uint32 {
	sum := c.sum
	if c.odd {
		sum += uint64(c.lo)
	}
	return uint32(fold16(sum)) + uint32(c.n)
}

// fold16 folds carries into the low 16 bits until none are left.
func fold16(x uint64) uint64 {
	for x > 0xffff {
		x = x&0xffff + x>>16
	}
	return x
}

func pow2(x uint32) bool { return x != 0 && x&(x-1) == 0 }

func alignUp(x, a uint64) uint64 { return (x + a - 1) &^ (a - 1) }
