package builder

import (
	"errors"
	"fmt"
	"io"
	"strings"
)

// The newc ("SVR4 portable, no CRC") cpio format, as the Linux kernel
// unpacks an initramfs (Documentation/driver-api/early-userspace/
// buffer-format.rst): a 110-byte ASCII header of "070701" and 13 fields of
// 8 hex digits, the NUL-terminated name padded to a multiple of 4, the data
// padded to a multiple of 4; the archive ends with an entry named
// "TRAILER!!!".
const (
	cpioMagic   = "070701"
	cpioTrailer = "TRAILER!!!"
	cpioHdrLen  = 110

	// File type bits of the mode field (stat.h).
	cpioModeDir     = 0o040000
	cpioModeFile    = 0o100000
	cpioModeSymlink = 0o120000

	// cpioMaxName is the kernel's PATH_MAX, terminating NUL included;
	// the kernel skips entries with longer names.
	cpioMaxName = 4096
)

// cpioHeader describes one cpio entry. Fields the builder keeps fixed
// (mtime 0, device numbers 0, check 0) are not in it; the writer numbers
// inodes itself.
type cpioHeader struct {
	Name     string // without a leading slash, e.g. "bin/busybox"
	Mode     uint32 // file type and permission bits
	UID, GID uint32
	NLink    uint32
	Size     int64 // data length: file size, or symlink target length
}

// cpioWriter writes a newc archive. Like archive/tar's Writer, WriteHeader
// starts an entry whose data is then written with Write.
type cpioWriter struct {
	w      io.Writer
	ino    uint32
	remain int64 // data of the current entry not yet written
	pad    int   // padding owed after the current entry's data
	buf    []byte
	err    error // sticky write error
	closed bool
}

func newCPIOWriter(w io.Writer) *cpioWriter { return &cpioWriter{w: w} }

// WriteHeader finishes the current entry and starts h, giving it the next
// inode number (1, 2, 3, ...).
func (cw *cpioWriter) WriteHeader(h *cpioHeader) error {
	if err := cw.finishEntry(); err != nil {
		return err
	}
	switch {
	case h.Name == "" || strings.ContainsRune(h.Name, 0):
		return fmt.Errorf("cpio: bad entry name %q", h.Name)
	case len(h.Name)+1 > cpioMaxName:
		return fmt.Errorf("cpio: %s: name longer than %d bytes", h.Name, cpioMaxName-1)
	case h.Size < 0 || h.Size > 1<<32-1:
		return fmt.Errorf("cpio: %s: size %d does not fit newc's 32 bits", h.Name, h.Size)
	}
	cw.ino++
	cw.writeHeader(cw.ino, h)
	cw.remain, cw.pad = h.Size, pad4(h.Size)
	return cw.err
}

// writeHeader writes the header and the padded name.
func (cw *cpioWriter) writeHeader(ino uint32, h *cpioHeader) {
	b := append(cw.buf[:0], cpioMagic...)
	for _, v := range []uint32{
		ino, h.Mode, h.UID, h.GID, h.NLink,
		0,              // mtime
		uint32(h.Size), // filesize
		0, 0,           // devmajor, devminor
		0, 0, // rdevmajor, rdevminor
		uint32(len(h.Name) + 1), // namesize, NUL included
		0,                       // check
	} {
		b = fmt.Appendf(b, "%08x", v)
	}
	b = append(b, h.Name...)
	b = append(b, 0)
	b = append(b, make([]byte, pad4(int64(len(b))))...)
	cw.buf = b
	cw.write(b)
}

// Write writes data of the current entry; writing more than its header's
// Size is an error.
func (cw *cpioWriter) Write(p []byte) (int, error) {
	if cw.err != nil {
		return 0, cw.err
	}
	if int64(len(p)) > cw.remain {
		n, _ := cw.Write(p[:cw.remain])
		return n, errors.New("cpio: write past the entry's size")
	}
	n, err := cw.w.Write(p)
	cw.remain -= int64(n)
	if err != nil {
		cw.err = err
	}
	return n, err
}

// Close writes the trailer. It does not close the underlying writer.
func (cw *cpioWriter) Close() error {
	if cw.closed {
		return cw.err
	}
	if err := cw.finishEntry(); err != nil {
		return err
	}
	cw.closed = true
	cw.writeHeader(0, &cpioHeader{Name: cpioTrailer, NLink: 1})
	return cw.err
}

// finishEntry checks the current entry is complete and pads its data.
func (cw *cpioWriter) finishEntry() error {
	if cw.closed {
		return errors.New("cpio: writer is closed")
	}
	if cw.remain > 0 {
		return fmt.Errorf("cpio: entry is %d bytes short of its size", cw.remain)
	}
	if cw.pad > 0 {
		cw.write(make([]byte, cw.pad))
		cw.pad = 0
	}
	return cw.err
}

func (cw *cpioWriter) write(b []byte) {
	if cw.err == nil {
		_, cw.err = cw.w.Write(b)
	}
}

// pad4 returns how many bytes pad n to a multiple of 4.
func pad4(n int64) int { return int((4 - n%4) % 4) }
