package uki

import (
	"bytes"
	"context"
	"debug/pe"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const testCmdline = "console=ttyS0 panic=-1 kiln.image=demo"

// testInputs writes a kernel (odd-sized, to exercise padding), an initrd
// and returns a Spec for them on the given stub.
func testInputs(t *testing.T, dir, stub string) Spec {
	t.Helper()
	return Spec{
		Stub:      stub,
		Kernel:    writeFile(t, dir, "vmlinuz", fakeKernel(t, pe.IMAGE_FILE_MACHINE_AMD64, 300001, 1)),
		Initrd:    writeFile(t, dir, "initrd", randomBytes(70003, 2)),
		Cmdline:   testCmdline,
		OSRelease: []byte("NAME=kiln\nID=kiln\nVERSION_ID=demo\n"),
		Log:       testLogger(t),
	}
}

// stubs returns the stubs TestWrite* run on: a synthetic one, and
// Debian's systemd-stub when it is installed (or CI is "true").
func stubs(t *testing.T) map[string]string {
	m := map[string]string{"fake": writeFile(t, t.TempDir(), "fake.stub", fakePE(t, fakePEOpts{sections: []string{".data", ".sbat"}}))}
	if _, err := os.Stat(DefaultStub); err == nil || os.Getenv("CI") == "true" {
		m["debian"] = DefaultStub
	} else {
		t.Logf("no %s: testing only a synthetic stub", DefaultStub)
	}
	return m
}

func TestWrite(t *testing.T) {
	for name, stubPath := range stubs(t) {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			s := testInputs(t, dir, stubPath)
			out := filepath.Join(dir, "kiln.efi")
			if err := Write(context.Background(), out, s); err != nil {
				t.Fatal(err)
			}
			stub := mustRead(t, stubPath)
			got := mustRead(t, out)
			checkUKI(t, stub, got, map[string][]byte{
				".osrel":   s.OSRelease,
				".cmdline": []byte(s.Cmdline),
				".linux":   mustRead(t, s.Kernel),
				".initrd":  mustRead(t, s.Initrd),
			})
			checkObjdump(t, out)
		})
	}
}

// checkUKI checks the UKI got, built on stub, against the PE format and
// the section contents want.
func checkUKI(t *testing.T, stub, got []byte, want map[string][]byte) {
	t.Helper()
	sf, err := pe.NewFile(bytes.NewReader(stub))
	if err != nil {
		t.Fatal(err)
	}
	f, err := pe.NewFile(bytes.NewReader(got))
	if err != nil {
		t.Fatalf("parsing the UKI: %v", err)
	}
	soh, oh := sf.OptionalHeader.(*pe.OptionalHeader64), f.OptionalHeader.(*pe.OptionalHeader64)

	var names, wantNames []string
	for _, s := range f.Sections {
		names = append(names, s.Name)
	}
	for _, s := range sf.Sections {
		wantNames = append(wantNames, s.Name)
	}
	for _, n := range []string{".osrel", ".cmdline", ".linux", ".initrd"} {
		if want[n] != nil {
			wantNames = append(wantNames, n)
		}
	}
	if diff := cmp.Diff(wantNames, names); diff != "" {
		t.Errorf("sections (-want +got):\n%s", diff)
	}

	var initData uint32
	for _, s := range f.Sections[len(sf.Sections):] {
		data, err := s.Data()
		if err != nil {
			t.Fatalf("reading %s: %v", s.Name, err)
		}
		if int(s.VirtualSize) > len(data) {
			t.Fatalf("%s: VirtualSize %d > SizeOfRawData %d", s.Name, s.VirtualSize, len(data))
		}
		if !bytes.Equal(data[:s.VirtualSize], want[s.Name]) {
			t.Errorf("%s: content (%d bytes) differs from the input (%d bytes)", s.Name, s.VirtualSize, len(want[s.Name]))
		}
		if bytes.ContainsFunc(data[s.VirtualSize:], func(r rune) bool { return r != 0 }) {
			t.Errorf("%s: padding is not zero", s.Name)
		}
		if s.VirtualAddress%oh.SectionAlignment != 0 || s.Offset%oh.FileAlignment != 0 || s.Size%oh.FileAlignment != 0 {
			t.Errorf("%s: VirtualAddress %#x, PointerToRawData %#x, SizeOfRawData %#x not aligned to %#x/%#x",
				s.Name, s.VirtualAddress, s.Offset, s.Size, oh.SectionAlignment, oh.FileAlignment)
		}
		if s.Characteristics != pe.IMAGE_SCN_CNT_INITIALIZED_DATA|pe.IMAGE_SCN_MEM_READ {
			t.Errorf("%s: characteristics %#x", s.Name, s.Characteristics)
		}
		initData += s.Size
	}
	checkNoOverlap(t, f, uint32(len(got)))

	last := f.Sections[len(f.Sections)-1]
	if want := alignUp(uint64(last.VirtualAddress)+uint64(last.VirtualSize), uint64(oh.SectionAlignment)); uint64(oh.SizeOfImage) != want {
		t.Errorf("SizeOfImage = %#x, want %#x", oh.SizeOfImage, want)
	}
	if oh.SizeOfInitializedData != soh.SizeOfInitializedData+initData {
		t.Errorf("SizeOfInitializedData = %#x, want %#x", oh.SizeOfInitializedData, soh.SizeOfInitializedData+initData)
	}
	if sum := refChecksum(got); oh.CheckSum != sum {
		t.Errorf("CheckSum = %#x, want %#x", oh.CheckSum, sum)
	}
	if oh.SizeOfHeaders != soh.SizeOfHeaders || f.TimeDateStamp != sf.TimeDateStamp || oh.AddressOfEntryPoint != soh.AddressOfEntryPoint {
		t.Errorf("SizeOfHeaders, TimeDateStamp or AddressOfEntryPoint changed")
	}
	// Everything of the stub after its headers (sections, symbol table) is
	// kept byte for byte.
	h := int(soh.SizeOfHeaders)
	if !bytes.Equal(got[h:len(stub)], stub[h:]) {
		t.Errorf("the stub's bytes after its headers changed")
	}
}

// checkNoOverlap checks that no two sections of f overlap in memory or in
// the file, and that each fits in SizeOfImage and in the file of size n.
func checkNoOverlap(t *testing.T, f *pe.File, n uint32) {
	t.Helper()
	oh := f.OptionalHeader.(*pe.OptionalHeader64)
	type span struct {
		name       string
		start, end uint64
	}
	check := func(what string, spans []span, limit uint64) {
		slices.SortFunc(spans, func(a, b span) int { return int(a.start) - int(b.start) })
		for i, s := range spans {
			if s.end > limit {
				t.Errorf("%s: %s ends at %#x, past %#x", what, s.name, s.end, limit)
			}
			if i > 0 && s.start < spans[i-1].end {
				t.Errorf("%s: %s [%#x, %#x) overlaps %s [%#x, %#x)", what, s.name, s.start, s.end,
					spans[i-1].name, spans[i-1].start, spans[i-1].end)
			}
		}
	}
	var mem, file []span
	for _, s := range f.Sections {
		mem = append(mem, span{s.Name, uint64(s.VirtualAddress), uint64(s.VirtualAddress) + uint64(s.VirtualSize)})
		file = append(file, span{s.Name, uint64(s.Offset), uint64(s.Offset) + uint64(s.Size)})
	}
	check("memory", mem, uint64(oh.SizeOfImage))
	check("file", file, uint64(n))
}

// checkObjdump checks that objdump -h lists the UKI sections as debug/pe
// reads them.
func checkObjdump(t *testing.T, out string) {
	t.Helper()
	objdump := need(t, "objdump")
	b, err := exec.Command(objdump, "-h", out).CombinedOutput()
	if err != nil {
		t.Fatalf("objdump -h: %v\n%s", err, b)
	}
	// "  8 .osrel        00000022  0000000000019400  0000000000019400  00014800  2**2"
	type row struct{ Size, VMA, Off uint64 }
	got := map[string]row{}
	for _, line := range strings.Split(string(b), "\n") {
		fs := strings.Fields(line)
		if len(fs) < 6 {
			continue
		}
		if _, err := strconv.Atoi(fs[0]); err != nil {
			continue
		}
		var r row
		for i, p := range map[int]*uint64{2: &r.Size, 3: &r.VMA, 5: &r.Off} {
			v, err := strconv.ParseUint(fs[i], 16, 64)
			if err != nil {
				t.Fatalf("objdump line %q: %v", line, err)
			}
			*p = v
		}
		got[fs[1]] = r
	}
	f, err := pe.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := map[string]row{}
	for _, s := range f.Sections {
		want[s.Name] = row{uint64(s.VirtualSize), uint64(s.VirtualAddress), uint64(s.Offset)}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("objdump -h %s (-debug/pe +objdump):\n%s\n%s", out, diff, b)
	}
}

func TestWriteReproducible(t *testing.T) {
	for name, stubPath := range stubs(t) {
		t.Run(name, func(t *testing.T) {
			var outs [][]byte
			for i := range 2 {
				dir := t.TempDir()
				s := testInputs(t, dir, stubPath)
				// Other paths, mtimes and times of day must not matter.
				old := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC).Add(time.Duration(i) * time.Hour)
				for _, p := range []string{s.Kernel, s.Initrd} {
					if err := os.Chtimes(p, old, old); err != nil {
						t.Fatal(err)
					}
				}
				if i == 1 {
					time.Sleep(1100 * time.Millisecond)
				}
				out := filepath.Join(dir, fmt.Sprintf("out%d.efi", i))
				if err := Write(context.Background(), out, s); err != nil {
					t.Fatal(err)
				}
				outs = append(outs, mustRead(t, out))
			}
			if !bytes.Equal(outs[0], outs[1]) {
				t.Errorf("two writes of the same inputs differ (%d and %d bytes)", len(outs[0]), len(outs[1]))
			}
		})
	}
}

// TestWriteDefaults checks the defaults: no initrd, no cmdline and the
// default .osrel.
func TestWriteDefaults(t *testing.T) {
	dir := t.TempDir()
	stub := fakePE(t, fakePEOpts{})
	s := Spec{
		Stub:   writeFile(t, dir, "stub", stub),
		Kernel: writeFile(t, dir, "vmlinuz", fakeKernel(t, pe.IMAGE_FILE_MACHINE_AMD64, 5000, 3)),
	}
	out := filepath.Join(dir, "out.efi")
	if err := Write(context.Background(), out, s); err != nil {
		t.Fatal(err)
	}
	checkUKI(t, stub, mustRead(t, out), map[string][]byte{
		".osrel": []byte(DefaultOSRelease),
		".linux": mustRead(t, s.Kernel),
	})
}

func TestWriteErrors(t *testing.T) {
	dir := t.TempDir()
	good := testInputs(t, dir, writeFile(t, dir, "stub", fakePE(t, fakePEOpts{})))
	file := func(name string, b []byte) string { return writeFile(t, dir, name, b) }
	nonzero := fakePE(t, fakePEOpts{})
	nonzero[0x40+4+20+240+40+7] = 1 // in the spare space after the one section header
	for _, tc := range []struct {
		name string
		edit func(s *Spec)
		want string
	}{
		{"no kernel", func(s *Spec) { s.Kernel = "" }, "uki: no kernel"},
		{"missing kernel", func(s *Spec) { s.Kernel = filepath.Join(dir, "nope") }, "uki: opening kernel: open " + filepath.Join(dir, "nope") + ": no such file"},
		{"kernel is a directory", func(s *Spec) { s.Kernel = dir }, "is not a regular file"},
		{"empty kernel", func(s *Spec) { s.Kernel = file("empty", nil) }, "kernel " + filepath.Join(dir, "empty") + " is empty"},
		{"kernel not PE", func(s *Spec) { s.Kernel = file("text", bytes.Repeat([]byte("not a kernel\n"), 100)) }, "not an EFI-stub kernel: no MZ header"},
		{"kernel without PE signature", func(s *Spec) {
			b := fakeKernel(t, pe.IMAGE_FILE_MACHINE_AMD64, 4096, 1)
			copy(b[0x40:], "XX")
			s.Kernel = file("nosig", b)
		}, "no PE signature"},
		{"arm64 kernel", func(s *Spec) { s.Kernel = file("arm64", fakeKernel(t, pe.IMAGE_FILE_MACHINE_ARM64, 4096, 1)) }, "kernel is for PE machine 0xaa64, the stub for 0x8664"},
		{"missing initrd", func(s *Spec) { s.Initrd = filepath.Join(dir, "nope") }, "uki: opening initrd"},
		{"empty initrd", func(s *Spec) { s.Initrd = file("empty", nil) }, "initrd " + filepath.Join(dir, "empty") + " is empty"},
		{"missing stub", func(s *Spec) { s.Stub = filepath.Join(dir, "nope") }, "uki: opening stub"},
		{"stub not PE", func(s *Spec) { s.Stub = file("text", bytes.Repeat([]byte("MZ stub\n"), 100)) }, "not a PE image"},
		{"stub is an ELF", func(s *Spec) { s.Stub = "/proc/self/exe" }, "not a PE image"},
		{"stub not EFI", func(s *Spec) { s.Stub = file("win", fakePE(t, fakePEOpts{subsystem: pe.IMAGE_SUBSYSTEM_WINDOWS_CUI})) }, "subsystem is 3, want 10"},
		{"stub signed", func(s *Spec) { s.Stub = file("signed", fakePE(t, fakePEOpts{signed: true})) }, "image is signed"},
		{"stub is a UKI", func(s *Spec) { s.Stub = file("uki", fakePE(t, fakePEOpts{sections: []string{".linux"}})) }, "already has a .linux section"},
		{"stub has no room", func(s *Spec) { s.Stub = file("tight", fakePE(t, fakePEOpts{sizeOfHeaders: 0x200})) }, "no room for 4 more section headers: they would end at 0x210, but the headers end at 0x200"},
		{"stub spare space used", func(s *Spec) { s.Stub = file("used", nonzero) }, "no room for 4 more section headers: byte 0x177 after the section table is in use"},
		{"cmdline too long", func(s *Spec) { s.Cmdline = strings.Repeat("x", MaxCmdline+1) }, "uki: cmdline is 2048 bytes, more than the kernel's 2047"},
		{"cmdline with newline", func(s *Spec) { s.Cmdline = "quiet\n" }, "uki: cmdline has byte 0xa at offset 5"},
		{"cmdline with NUL", func(s *Spec) { s.Cmdline = "a\x00b" }, "uki: cmdline has byte 0x0 at offset 1"},
		{"cmdline not ASCII", func(s *Spec) { s.Cmdline = "x=é" }, "uki: cmdline has byte 0xc3 at offset 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := good
			tc.edit(&s)
			out := filepath.Join(t.TempDir(), "out.efi")
			err := Write(context.Background(), out, s)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Write() = %v, want an error containing %q", err, tc.want)
			}
			if _, err := os.Lstat(out); !os.IsNotExist(err) {
				t.Errorf("after the error, %s: %v, want it missing", out, err)
			}
		})
	}

	t.Run("longest cmdline", func(t *testing.T) {
		s := good
		s.Cmdline = strings.Repeat("x", MaxCmdline)
		if err := Write(context.Background(), filepath.Join(t.TempDir(), "out.efi"), s); err != nil {
			t.Errorf("Write() with a %d-byte cmdline: %v", MaxCmdline, err)
		}
	})
	t.Run("out exists", func(t *testing.T) {
		out := writeFile(t, t.TempDir(), "out.efi", []byte("keep me"))
		if err := Write(context.Background(), out, good); err == nil || !strings.Contains(err.Error(), "file exists") {
			t.Errorf("Write() = %v, want a 'file exists' error", err)
		}
		if got := string(mustRead(t, out)); got != "keep me" {
			t.Errorf("existing out was changed to %q", got)
		}
	})
	t.Run("canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		out := filepath.Join(t.TempDir(), "out.efi")
		if err := Write(ctx, out, good); err == nil || !strings.Contains(err.Error(), "context canceled") {
			t.Errorf("Write() = %v, want context canceled", err)
		}
		if _, err := os.Lstat(out); !os.IsNotExist(err) {
			t.Errorf("after cancel, %s: %v, want it missing", out, err)
		}
	})
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
