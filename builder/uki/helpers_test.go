package uki

import (
	"bytes"
	"debug/pe"
	"encoding/binary"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// fakePEOpts shapes the PE32+ EFI application fakePE builds.
type fakePEOpts struct {
	machine       uint16   // 0 means AMD64
	sizeOfHeaders uint32   // 0 means 0x400
	sections      []string // names after .text
	signed        bool     // a non-empty certificate table
	subsystem     uint16   // 0 means EFI application
}

// fakePE builds a small PE32+ image: an MS-DOS header, the PE headers and a
// section table, then 0x200 bytes of data per section (.text first), with
// SectionAlignment 0x1000 and FileAlignment 0x200.
func fakePE(t testing.TB, o fakePEOpts) []byte {
	t.Helper()
	if o.machine == 0 {
		o.machine = pe.IMAGE_FILE_MACHINE_AMD64
	}
	if o.sizeOfHeaders == 0 {
		o.sizeOfHeaders = 0x400
	}
	if o.subsystem == 0 {
		o.subsystem = pe.IMAGE_SUBSYSTEM_EFI_APPLICATION
	}
	names := append([]string{".text"}, o.sections...)
	const peOff, fa, sa = 0x40, 0x200, 0x1000
	var b bytes.Buffer
	dos := make([]byte, peOff)
	copy(dos, "MZ")
	binary.LittleEndian.PutUint32(dos[offLfanew:], peOff)
	b.Write(dos)
	b.WriteString("PE\x00\x00")
	le := binary.LittleEndian
	write := func(v any) {
		if err := binary.Write(&b, le, v); err != nil {
			t.Fatal(err)
		}
	}
	write(pe.FileHeader{
		Machine: o.machine, NumberOfSections: uint16(len(names)),
		SizeOfOptionalHeader: 240, Characteristics: pe.IMAGE_FILE_EXECUTABLE_IMAGE,
	})
	oh := pe.OptionalHeader64{
		Magic: magicPE32Plus, AddressOfEntryPoint: sa, BaseOfCode: sa,
		SectionAlignment: sa, FileAlignment: fa,
		SizeOfImage:   sa * uint32(1+len(names)),
		SizeOfHeaders: o.sizeOfHeaders, Subsystem: o.subsystem,
		SizeOfCode: fa, SizeOfInitializedData: fa * uint32(len(names)-1),
		NumberOfRvaAndSizes: 16,
	}
	if o.signed {
		oh.DataDirectory[dataDirSecurity] = pe.DataDirectory{VirtualAddress: 0x10000, Size: 8}
	}
	write(oh)
	for i, name := range names {
		var h pe.SectionHeader32
		copy(h.Name[:], name)
		h.VirtualSize = 0x100
		h.VirtualAddress = sa * uint32(i+1)
		h.SizeOfRawData = fa
		h.PointerToRawData = o.sizeOfHeaders + fa*uint32(i)
		h.Characteristics = scnInitializedDataReadOnly
		write(h)
	}
	if b.Len() > int(o.sizeOfHeaders) {
		b.Truncate(int(o.sizeOfHeaders)) // the table overflows: only parsing may notice
	}
	b.Write(make([]byte, int(o.sizeOfHeaders)-b.Len()))
	for i := range names {
		sec := bytes.Repeat([]byte{byte(0x90 + i)}, fa)
		b.Write(sec)
	}
	return b.Bytes()
}

// fakeKernel returns a PE image for machine with n bytes in all, the tail
// pseudo-random from seed.
func fakeKernel(t testing.TB, machine uint16, n int, seed uint64) []byte {
	t.Helper()
	b := fakePE(t, fakePEOpts{machine: machine})
	return append(b, randomBytes(n-len(b), seed)...)
}

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// need skips the test when the named command or file is missing, unless
// CI is "true": then it fails.
func need(t *testing.T, what string) string {
	t.Helper()
	var err error
	path := what
	if filepath.IsAbs(what) {
		_, err = os.Stat(what)
	} else {
		path, err = exec.LookPath(what)
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("need %s: %v", what, err)
		}
		t.Skipf("need %s: %v", what, err)
	}
	return path
}

// writeFile writes b to a new file in dir and returns its path.
func writeFile(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// refChecksum is the PE checksum of the image b, computed the simple way:
// the CheckSum field read as zero, 32-bit sums of 16-bit words folded at
// the end, plus the length.
func refChecksum(b []byte) uint32 {
	at := int(binary.LittleEndian.Uint32(b[offLfanew:])) + 4 + coffHeaderLen + optCheckSum
	n := len(b)
	b = bytes.Clone(b)
	clear(b[at : at+4])
	if len(b)%2 == 1 {
		b = append(b, 0)
	}
	var sum uint32
	for i := 0; i < len(b); i += 2 {
		sum += uint32(binary.LittleEndian.Uint16(b[i:]))
		sum = sum&0xffff + sum>>16
	}
	return sum + uint32(n)
}

// storedChecksum returns the CheckSum field of the image b.
func storedChecksum(b []byte) uint32 {
	at := int(binary.LittleEndian.Uint32(b[offLfanew:])) + 4 + coffHeaderLen + optCheckSum
	return binary.LittleEndian.Uint32(b[at:])
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}
