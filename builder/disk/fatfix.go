package disk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// go-diskfs v1.9.4 leaves three things in a FAT32 file system that
// fsck.fat reports or that Write wants otherwise; fixFAT32 mends them
// afterwards, following Microsoft's FAT specification (fatgen103):
//
//   - with Reproducible set, the volume serial number is 0; it becomes one
//     derived from Spec.Seed;
//   - the ".." entry of a directory in the root directory points to the
//     root's cluster, where the specification wants cluster 0;
//   - the FSInfo sector's free cluster count and next free cluster are
//     "unknown"; they get their values.

// Boot sector (BPB) fields of FAT32.
const (
	bpbBytesPerSector  = 0x0B
	bpbSectorsPerClust = 0x0D
	bpbReservedSectors = 0x0E
	bpbNumFATs         = 0x10
	bpbTotalSectors32  = 0x20
	bpbFATSize32       = 0x24
	bpbRootCluster     = 0x2C
	bpbFSInfo          = 0x30
	bpbBackupBoot      = 0x32
	bpbVolID           = 0x43

	fsiFreeCount = 488
	fsiNextFree  = 492

	dirEntrySize   = 32
	attrVolumeID   = 0x08
	attrDirectory  = 0x10
	attrLongName   = 0x0F
	fat32EntryMask = 0x0FFFFFFF
	fat32EOC       = 0x0FFFFFF8
)

// fixFAT32 mends the FAT32 file system at off in f, as described above,
// giving it volume serial number serial.
func fixFAT32(f interface {
	io.ReaderAt
	io.WriterAt
}, off int64, serial uint32) error {
	le := binary.LittleEndian
	bs := make([]byte, 512)
	if _, err := f.ReadAt(bs, off); err != nil {
		return fmt.Errorf("reading FAT boot sector: %w", err)
	}
	bps := int64(le.Uint16(bs[bpbBytesPerSector:]))
	spc := int64(bs[bpbSectorsPerClust])
	reserved := int64(le.Uint16(bs[bpbReservedSectors:]))
	fatSize := int64(le.Uint32(bs[bpbFATSize32:]))
	total := int64(le.Uint32(bs[bpbTotalSectors32:]))
	rootCluster := le.Uint32(bs[bpbRootCluster:])
	if bps != 512 && bps != 4096 || spc == 0 || fatSize == 0 || bs[510] != 0x55 || bs[511] != 0xAA {
		return errors.New("reading FAT boot sector: not FAT32")
	}
	fsInfo := int64(le.Uint16(bs[bpbFSInfo:]))
	backup := int64(le.Uint16(bs[bpbBackupBoot:]))
	dataStart := (reserved + int64(bs[bpbNumFATs])*fatSize) * bps
	clusterBytes := spc * bps
	clusters := (total*bps - dataStart) / clusterBytes

	var ser [4]byte
	le.PutUint32(ser[:], serial)
	for _, sec := range []int64{0, backup} {
		if _, err := f.WriteAt(ser[:], off+sec*bps+bpbVolID); err != nil {
			return fmt.Errorf("writing FAT volume serial number: %w", err)
		}
	}

	fat := make([]byte, fatSize*bps)
	if _, err := f.ReadAt(fat, off+reserved*bps); err != nil {
		return fmt.Errorf("reading FAT: %w", err)
	}
	entry := func(c uint32) uint32 { return le.Uint32(fat[4*c:]) & fat32EntryMask }
	if int64(len(fat)/4) < clusters+2 {
		return fmt.Errorf("reading FAT: %d entries for %d clusters", len(fat)/4, clusters)
	}

	// The root directory's chain of clusters, then its subdirectories.
	clusterAt := func(c uint32) int64 { return off + dataStart + int64(c-2)*clusterBytes }
	buf := make([]byte, clusterBytes)
	var subdirs []uint32
	for c, n := rootCluster, 0; c >= 2 && c < fat32EOC; c, n = entry(c), n+1 {
		if int64(c) >= clusters+2 || int64(n) > clusters {
			return fmt.Errorf("reading FAT root directory: bad cluster chain at %d", c)
		}
		if _, err := f.ReadAt(buf, clusterAt(c)); err != nil {
			return fmt.Errorf("reading FAT root directory: %w", err)
		}
		end := false
		for e := 0; e < len(buf) && !end; e += dirEntrySize {
			d := buf[e : e+dirEntrySize]
			attr := d[11]
			switch {
			case d[0] == 0:
				end = true
			case d[0] == 0xE5, attr == attrLongName, attr&attrVolumeID != 0, attr&attrDirectory == 0:
			default:
				subdirs = append(subdirs, uint32(le.Uint16(d[20:]))<<16|uint32(le.Uint16(d[26:])))
			}
		}
		if end {
			break
		}
	}
	for _, c := range subdirs {
		if c < 2 || int64(c) >= clusters+2 {
			return fmt.Errorf("reading FAT directory: bad cluster %d", c)
		}
		dotdot := buf[:dirEntrySize]
		at := clusterAt(c) + dirEntrySize
		if _, err := f.ReadAt(dotdot, at); err != nil {
			return fmt.Errorf("reading FAT directory: %w", err)
		}
		if string(dotdot[:11]) != "..         " {
			return fmt.Errorf("reading FAT directory at cluster %d: no \"..\" entry", c)
		}
		le.PutUint16(dotdot[20:], 0)
		le.PutUint16(dotdot[26:], 0)
		if _, err := f.WriteAt(dotdot, at); err != nil {
			return fmt.Errorf("writing FAT directory: %w", err)
		}
	}

	var free uint32
	next := uint32(0xFFFFFFFF) // unknown
	for c := uint32(2); int64(c) < clusters+2; c++ {
		if entry(c) == 0 {
			if free == 0 {
				next = c
			}
			free++
		}
	}
	var fsi [8]byte
	le.PutUint32(fsi[0:], free)
	le.PutUint32(fsi[4:], next)
	for _, sec := range []int64{fsInfo, backup + fsInfo} {
		if _, err := f.WriteAt(fsi[:], off+sec*bps+fsiFreeCount); err != nil {
			return fmt.Errorf("writing FAT FSInfo sector: %w", err)
		}
	}
	return nil
}
