package uki

import (
	"bytes"
	"debug/pe"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// sumChunks computes peChecksum over b written in chunks of the given
// sizes, cycling, with the CheckSum field zeroed.
func sumChunks(b []byte, sizes ...int) uint32 {
	b = bytes.Clone(b)
	at := int(binary.LittleEndian.Uint32(b[offLfanew:])) + 4 + coffHeaderLen + optCheckSum
	clear(b[at : at+4])
	var c peChecksum
	for i := 0; len(b) > 0; i++ {
		n := min(sizes[i%len(sizes)], len(b))
		c.Write(b[:n])
		b = b[n:]
	}
	return c.Sum()
}

// TestChecksum checks peChecksum against the checksums GNU ld and objcopy
// wrote: that of Debian's systemd-stub, and that of the stub after objcopy
// added a section, the systemd-stub(7) way (odd-sized, to cover a trailing
// odd byte).
func TestChecksum(t *testing.T) {
	need(t, DefaultStub)
	objcopy := need(t, "objcopy")
	dir := t.TempDir()
	cmdline := writeFile(t, dir, "cmdline", []byte("console=ttyS0\n"))
	osrel := writeFile(t, dir, "osrel", []byte("ID=odd\n"))
	out := filepath.Join(dir, "objcopy.efi")
	cmd := exec.Command(objcopy,
		"--add-section", ".osrel="+osrel, "--change-section-vma", ".osrel=0x20000",
		"--add-section", ".cmdline="+cmdline, "--change-section-vma", ".cmdline=0x30000",
		DefaultStub, out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %v\n%s", cmd, err, b)
	}
	for _, path := range []string{DefaultStub, out} {
		b := mustRead(t, path)
		want := storedChecksum(b)
		if want == 0 {
			t.Fatalf("%s has no checksum to compare with", path)
		}
		t.Logf("%s: %d bytes, CheckSum %#x", path, len(b), want)
		if got := refChecksum(b); got != want {
			t.Errorf("refChecksum(%s) = %#x, want %#x", path, got, want)
		}
		for _, sizes := range [][]int{{len(b)}, {1}, {3, 1, 4096, 7}, {2, 5}} {
			if got := sumChunks(b, sizes...); got != want {
				t.Errorf("peChecksum of %s in chunks of %v = %#x, want %#x", path, sizes, got, want)
			}
		}
	}
}

// FuzzParseStub checks that parseStub never panics, and that whatever it
// accepts takes the four UKI sections: debug/pe reads them back as laid
// out, past the stub's sections.
func FuzzParseStub(f *testing.F) {
	f.Add(fakePE(f, fakePEOpts{}))
	f.Add(fakePE(f, fakePEOpts{sections: []string{".data", ".sbat", ".sdmagic"}}))
	f.Add(fakePE(f, fakePEOpts{sizeOfHeaders: 0x200}))
	if b, err := os.ReadFile(DefaultStub); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := parseStub(b)
		if err != nil {
			return
		}
		in, err := pe.NewFile(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("parseStub accepted what debug/pe rejects: %v", err)
		}
		secs := []section{{name: ".osrel", size: 3}, {name: ".cmdline", size: 1}, {name: ".linux", size: 513}, {name: ".initrd", size: 512}}
		size, err := st.layout(secs)
		if err != nil {
			return
		}
		h := st.header(secs, size)
		if len(h) != len(b) {
			t.Fatalf("header is %d bytes, the stub %d", len(h), len(b))
		}
		f, err := pe.NewFile(bytes.NewReader(h))
		if err != nil {
			t.Fatalf("debug/pe rejects the new headers: %v", err)
		}
		if len(f.Sections) != len(in.Sections)+len(secs) {
			t.Fatalf("%d sections, want %d", len(f.Sections), len(in.Sections)+len(secs))
		}
		for i, want := range secs {
			got := f.Sections[len(in.Sections)+i]
			if got.Name != want.name || got.VirtualSize != uint32(want.size) || got.VirtualAddress != want.va ||
				got.Offset != want.off || got.Size != want.rawSize {
				t.Errorf("section %d = %+v, want %+v", i, got.SectionHeader, want)
			}
			if int64(want.off) < int64(len(b)) || uint64(want.va) < st.imageEnd || want.va > size {
				t.Errorf("section %s at %#x/%#x overlaps the stub (%d bytes, image end %#x)", want.name, want.off, want.va, len(b), st.imageEnd)
			}
		}
	})
}
