// Package uki writes Unified Kernel Images: a kernel, its initrd, its
// command line and an os-release file joined into one PE/EFI binary that
// UEFI firmware boots directly, from a disk or over HTTP Boot.
//
// The image is systemd-stub (Debian 12's systemd-boot-efi, systemd 252)
// with four sections appended, as ukify and the objcopy recipe in
// systemd-stub(7) add them: .osrel, .cmdline, .linux and .initrd, each of
// them read-only initialized data. The stub finds them by name when it
// runs, passes .cmdline to the kernel as its command line and serves
// .initrd to the kernel's EFI stub.
//
// Write is pure Go: it copies the stub, adds the four section headers to
// the spare space after its section table, places each section's
// VirtualAddress after the previous one (SectionAlignment-aligned) and its
// data after the end of the stub file (FileAlignment-aligned), updates
// NumberOfSections, SizeOfImage and SizeOfInitializedData and computes the
// PE checksum. Nothing in the output depends on the time or the host: the
// same stub, kernel, initrd, command line and os-release always give the
// same bytes.
package uki

// BUG(uki): The UKI is not signed for Secure Boot; sign it afterwards (a
// signed stub is refused, as adding sections would break its signature).

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
)

// DefaultStub is the systemd-stub that Spec.Stub defaults to, from
// Debian's systemd-boot-efi package.
const DefaultStub = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub"

// MaxCmdline is the longest command line, in bytes, that Write accepts:
// the x86 kernel's COMMAND_LINE_SIZE (2048) less its terminating NUL.
const MaxCmdline = 2047

// CmdlineRoom is the room the .cmdline section takes in the file and in
// memory, whatever the command line's length: zeros follow it. A server
// can so lengthen the command line of a copy in place, up to MaxCmdline
// bytes, by rewriting the section's bytes and its VirtualSize (kiln serve
// adds each boot's token to the UKIs it serves over HTTP Boot).
const CmdlineRoom = MaxCmdline + 1

// DefaultOSRelease is the .osrel section of a Spec without OSRelease.
const DefaultOSRelease = "NAME=kiln\nID=kiln\n"

// Spec describes a Unified Kernel Image.
type Spec struct {
	// Stub is the host path of the systemd-stub EFI binary the image is
	// built on; "" means DefaultStub. It MUST be an unsigned PE32+ EFI
	// application without UKI sections of its own.
	Stub string
	// Kernel is the host path of the kernel: an EFI-stub kernel image
	// (bzImage) for the stub's machine.
	Kernel string
	// Initrd is the host path of the initrd; "" means none. It is stored as
	// is (compressed or not, as the kernel accepts it).
	Initrd string
	// Cmdline is the kernel command line: printable ASCII, at most
	// MaxCmdline bytes. "" leaves the .cmdline section out, and then the
	// stub passes on the command line of the firmware's boot entry, if any.
	Cmdline string
	// OSRelease is the content of the .osrel section, in os-release(5)
	// format (NAME=kiln\nID=kiln\nVERSION_ID=<image>\n); empty means
	// DefaultOSRelease.
	OSRelease []byte
	// Log receives a line per image written; nil discards it.
	Log *slog.Logger
}

// Write writes the UKI that s describes to out, a new file: it fails if
// out exists. Same inputs give byte-identical output. On error, nothing is
// left at out.
func Write(ctx context.Context, out string, s Spec) (err error) {
	log := s.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := checkCmdline(s.Cmdline); err != nil {
		return err
	}
	if s.Kernel == "" {
		return errors.New("uki: no kernel")
	}
	stubPath := s.Stub
	if stubPath == "" {
		stubPath = DefaultStub
	}
	st, err := readStub(stubPath)
	if err != nil {
		return err
	}

	osrel := s.OSRelease
	if len(osrel) == 0 {
		osrel = []byte(DefaultOSRelease)
	}
	secs := []section{{name: ".osrel", size: int64(len(osrel)), src: bytes.NewReader(osrel)}}
	if s.Cmdline != "" {
		secs = append(secs, section{name: ".cmdline", size: int64(len(s.Cmdline)), src: bytes.NewReader([]byte(s.Cmdline)), reserve: CmdlineRoom})
	}
	kernel, ksize, err := openInput("kernel", s.Kernel)
	if err != nil {
		return err
	}
	defer kernel.Close()
	if err := checkKernel(kernel, ksize, st.machine); err != nil {
		return fmt.Errorf("uki: kernel %s: %w", s.Kernel, err)
	}
	secs = append(secs, section{name: ".linux", size: ksize, src: kernel, path: s.Kernel})
	if s.Initrd != "" {
		initrd, size, err := openInput("initrd", s.Initrd)
		if err != nil {
			return err
		}
		defer initrd.Close()
		secs = append(secs, section{name: ".initrd", size: size, src: initrd, path: s.Initrd})
	}
	sizeOfImage, err := st.layout(secs)
	if err != nil {
		return fmt.Errorf("uki: stub %s: %w", stubPath, err)
	}

	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("uki: creating %s: %w", out, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(out)
		}
	}()
	size, err := st.write(ctx, f, secs, sizeOfImage)
	if err != nil {
		return fmt.Errorf("uki: writing %s: %w", out, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("uki: writing %s: %w", out, err)
	}
	for _, sec := range secs {
		log.Debug("uki section", "name", sec.name, "bytes", sec.size,
			"vma", fmt.Sprintf("%#x", sec.va), "offset", fmt.Sprintf("%#x", sec.off))
	}
	log.Info("wrote uki", "out", out, "bytes", size, "stub", stubPath, "kernel", s.Kernel,
		"initrd", s.Initrd, "cmdline", s.Cmdline)
	return nil
}

// write writes the stub with its new headers, then each section's data,
// and finally the checksum. It returns the file's size.
func (st *stub) write(ctx context.Context, f *os.File, secs []section, sizeOfImage uint32) (int64, error) {
	var sum peChecksum
	bw := bufio.NewWriterSize(io.MultiWriter(f, &sum), 1<<20)
	if _, err := bw.Write(st.header(secs, sizeOfImage)); err != nil {
		return 0, err
	}
	pos := int64(len(st.b))
	for _, sec := range secs {
		if err := writeZeros(bw, int64(sec.off)-pos); err != nil {
			return 0, err
		}
		if err := copySection(ctx, bw, sec); err != nil {
			return 0, err
		}
		if err := writeZeros(bw, int64(sec.rawSize)-sec.size); err != nil {
			return 0, err
		}
		pos = int64(sec.off) + int64(sec.rawSize)
	}
	if err := bw.Flush(); err != nil {
		return 0, err
	}
	var cs [4]byte
	binary.LittleEndian.PutUint32(cs[:], sum.Sum())
	if _, err := f.WriteAt(cs[:], st.checksumOffset()); err != nil {
		return 0, err
	}
	return pos, nil
}

// copySection copies exactly sec.size bytes of sec.src to w, checking ctx
// as it goes, and fails if the source is shorter or longer than that.
func copySection(ctx context.Context, w io.Writer, sec section) error {
	r := ctxReader{ctx, sec.src}
	n, err := io.CopyN(w, r, sec.size)
	if err == io.EOF {
		return fmt.Errorf("%s %s shrank while it was read: %d of %d bytes", sec.name, sec.path, n, sec.size)
	}
	if err != nil {
		return fmt.Errorf("copying %s %s: %w", sec.name, sec.path, err)
	}
	var one [1]byte
	if n, _ := io.ReadFull(r, one[:]); n != 0 {
		return fmt.Errorf("%s %s grew while it was read", sec.name, sec.path)
	}
	return ctx.Err()
}

// readStub reads and parses the stub at path.
func readStub(path string) (*stub, error) {
	f, size, err := openInput("stub", path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if size > maxStubSize {
		return nil, fmt.Errorf("uki: stub %s is %d bytes, more than a stub's %d", path, size, maxStubSize)
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, fmt.Errorf("uki: reading stub %s: %w", path, err)
	}
	st, err := parseStub(b)
	if err != nil {
		return nil, fmt.Errorf("uki: stub %s: %w", path, err)
	}
	return st, nil
}

// openInput opens the regular, non-empty file at path, which is the image's
// what, and returns it with its size.
func openInput(what, path string) (*os.File, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("uki: opening %s: %w", what, err)
	}
	fi, err := f.Stat()
	switch {
	case err != nil:
		err = fmt.Errorf("uki: %s %s: %w", what, path, err)
	case !fi.Mode().IsRegular():
		err = fmt.Errorf("uki: %s %s is not a regular file (%v)", what, path, fi.Mode().Type())
	case fi.Size() == 0:
		err = fmt.Errorf("uki: %s %s is empty", what, path)
	}
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, fi.Size(), nil
}

// checkKernel checks that the kernel is a PE image for machine, as an
// EFI-stub kernel (an x86 bzImage built with CONFIG_EFI_STUB) is.
func checkKernel(r io.ReaderAt, size int64, machine uint16) error {
	var mz [offLfanew + 4]byte
	if size < int64(len(mz)) {
		return fmt.Errorf("%d bytes is too small for a kernel", size)
	}
	if _, err := r.ReadAt(mz[:], 0); err != nil {
		return err
	}
	if string(mz[:2]) != "MZ" {
		return errors.New("not an EFI-stub kernel: no MZ header")
	}
	peOff := int64(binary.LittleEndian.Uint32(mz[offLfanew:]))
	var sig [6]byte
	if peOff+int64(len(sig)) > size {
		return errors.New("not an EFI-stub kernel: PE header offset past the end")
	}
	if _, err := r.ReadAt(sig[:], peOff); err != nil {
		return err
	}
	if string(sig[:4]) != "PE\x00\x00" {
		return errors.New("not an EFI-stub kernel: no PE signature")
	}
	if m := binary.LittleEndian.Uint16(sig[4:]); m != machine {
		return fmt.Errorf("kernel is for PE machine %#x, the stub for %#x", m, machine)
	}
	return nil
}

// checkCmdline checks that the kernel and the stub take c as it is.
func checkCmdline(c string) error {
	if len(c) > MaxCmdline {
		return fmt.Errorf("uki: cmdline is %d bytes, more than the kernel's %d", len(c), MaxCmdline)
	}
	for i := 0; i < len(c); i++ {
		if c[i] < 0x20 || c[i] > 0x7e {
			return fmt.Errorf("uki: cmdline has byte %#x at offset %d; only printable ASCII is allowed", c[i], i)
		}
	}
	return nil
}

// ctxReader fails reads once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

var zeros [4096]byte

// writeZeros writes n zero bytes; n <= 0 writes nothing.
func writeZeros(w io.Writer, n int64) error {
	for n > 0 {
		k := min(n, int64(len(zeros)))
		if _, err := w.Write(zeros[:k]); err != nil {
			return err
		}
		n -= k
	}
	return nil
}
