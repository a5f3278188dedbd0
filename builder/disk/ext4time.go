package disk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// mke2fs 1.47.0 -d copies each file's atime, mtime and ctime from the
// host, so setExt4Times rewrites them in the inode table. The on-disk
// format is the kernel's Documentation/filesystems/ext4/ (superblock,
// group descriptors, inode table and its checksums).

// Superblock fields (offsets in the superblock, which starts 1024 bytes
// into the file system).
const (
	sbOffset          = 1024
	sbInodesCount     = 0x00
	sbBlocksCountLo   = 0x04
	sbFirstDataBlock  = 0x14
	sbLogBlockSize    = 0x18
	sbBlocksPerGroup  = 0x20
	sbInodesPerGroup  = 0x28
	sbMagic           = 0x38
	sbInodeSize       = 0x58
	sbFeatureIncompat = 0x60
	sbFeatureROCompat = 0x64
	sbUUID            = 0x68
	sbDescSize        = 0xFE
	sbBlocksCountHi   = 0x150
	sbChecksumSeed    = 0x270

	ext4Magic = 0xEF53

	incompat64Bit    = 0x80
	incompatCsumSeed = 0x2000
	roCompatGDTCsum  = 0x10
	roCompatMetaCsum = 0x400
)

// Group descriptor fields.
const (
	bgInodeTableLo    = 0x08
	bgFlags           = 0x12
	bgItableUnusedLo  = 0x1C
	bgInodeTableHi    = 0x28
	bgItableUnusedHi  = 0x32
	bgFlagInodeUninit = 0x1
)

// Inode fields.
const (
	iMode        = 0x00
	iAtime       = 0x08
	iCtime       = 0x0C
	iMtime       = 0x10
	iGeneration  = 0x64
	iChecksumLo  = 0x7C
	iExtraIsize  = 0x80
	iChecksumHi  = 0x82
	iCtimeExtra  = 0x84
	iMtimeExtra  = 0x88
	iAtimeExtra  = 0x8C
	iCrtime      = 0x90
	iCrtimeExtra = 0x94
	goodOldInode = 128
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// crc32c is ext4's checksum: CRC32C from crc, without the final inversion.
func crc32c(crc uint32, p []byte) uint32 {
	return ^crc32.Update(^crc, castagnoli, p)
}

// ext4Geometry is what setExt4Times needs of a superblock.
type ext4Geometry struct {
	blockSize      int64
	groups         int64
	inodesPerGroup int64
	inodeSize      int64
	descSize       int64
	gdtStart       int64 // byte offset in the file system
	uninitBG       bool  // group descriptors track unused inodes
	metaCsum       bool
	csumSeed       uint32
}

func readExt4Geometry(r io.ReaderAt, off int64) (ext4Geometry, error) {
	sb := make([]byte, 1024)
	if _, err := r.ReadAt(sb, off+sbOffset); err != nil {
		return ext4Geometry{}, fmt.Errorf("reading superblock: %w", err)
	}
	le := binary.LittleEndian
	if le.Uint16(sb[sbMagic:]) != ext4Magic {
		return ext4Geometry{}, errors.New("reading superblock: no ext4 magic")
	}
	incompat, roCompat := le.Uint32(sb[sbFeatureIncompat:]), le.Uint32(sb[sbFeatureROCompat:])
	g := ext4Geometry{
		blockSize:      1024 << le.Uint32(sb[sbLogBlockSize:]),
		inodesPerGroup: int64(le.Uint32(sb[sbInodesPerGroup:])),
		inodeSize:      int64(le.Uint16(sb[sbInodeSize:])),
		descSize:       32,
		uninitBG:       roCompat&(roCompatGDTCsum|roCompatMetaCsum) != 0,
		metaCsum:       roCompat&roCompatMetaCsum != 0,
	}
	blocks := int64(le.Uint32(sb[sbBlocksCountLo:]))
	if incompat&incompat64Bit != 0 {
		blocks |= int64(le.Uint32(sb[sbBlocksCountHi:])) << 32
		g.descSize = int64(le.Uint16(sb[sbDescSize:]))
	}
	first := int64(le.Uint32(sb[sbFirstDataBlock:]))
	bpg := int64(le.Uint32(sb[sbBlocksPerGroup:]))
	if bpg == 0 || g.inodesPerGroup == 0 || g.inodeSize < goodOldInode || g.descSize < 32 || g.blockSize > 64<<10 {
		return ext4Geometry{}, errors.New("reading superblock: bad geometry")
	}
	g.groups = (blocks - first + bpg - 1) / bpg
	g.gdtStart = (first + 1) * g.blockSize
	if incompat&incompatCsumSeed != 0 {
		g.csumSeed = le.Uint32(sb[sbChecksumSeed:])
	} else {
		g.csumSeed = crc32c(^uint32(0), sb[sbUUID:sbUUID+16])
	}
	return g, nil
}

// setExt4Times sets the access, change, modification and creation times
// of every in-use inode of the ext4 file system at off in f to t
// (seconds, nanoseconds 0), updating the inode checksums. It returns the
// number of inodes it changed.
func setExt4Times(f interface {
	io.ReaderAt
	io.WriterAt
}, off int64, t uint32) (int, error) {
	g, err := readExt4Geometry(f, off)
	if err != nil {
		return 0, err
	}
	gdt := make([]byte, g.groups*g.descSize)
	if _, err := f.ReadAt(gdt, off+g.gdtStart); err != nil {
		return 0, fmt.Errorf("reading group descriptors: %w", err)
	}
	le := binary.LittleEndian
	changed := 0
	var table []byte
	for grp := range g.groups {
		d := gdt[grp*g.descSize : (grp+1)*g.descSize]
		if g.uninitBG && le.Uint16(d[bgFlags:])&bgFlagInodeUninit != 0 {
			continue
		}
		used := g.inodesPerGroup
		itable := int64(le.Uint32(d[bgInodeTableLo:]))
		if g.descSize >= 64 {
			itable |= int64(le.Uint32(d[bgInodeTableHi:])) << 32
		}
		if g.uninitBG {
			unused := int64(le.Uint16(d[bgItableUnusedLo:]))
			if g.descSize >= 64 {
				unused |= int64(le.Uint16(d[bgItableUnusedHi:])) << 16
			}
			used -= unused
		}
		if used <= 0 {
			continue
		}
		table = append(table[:0], make([]byte, used*g.inodeSize)...)
		at := off + itable*g.blockSize
		if _, err := f.ReadAt(table, at); err != nil {
			return changed, fmt.Errorf("reading inode table of group %d: %w", grp, err)
		}
		// Write back only the blocks that changed, so that the image
		// stays as sparse as mke2fs left it.
		dirty := make([]bool, (int64(len(table))+g.blockSize-1)/g.blockSize)
		for i := range used {
			raw := table[i*g.inodeSize : (i+1)*g.inodeSize]
			ino := uint32(grp*g.inodesPerGroup + i + 1)
			if le.Uint16(raw[iMode:]) == 0 || !setInodeTimes(raw, ino, t, g) {
				continue
			}
			changed++
			dirty[i*g.inodeSize/g.blockSize] = true
		}
		for b, ok := range dirty {
			if !ok {
				continue
			}
			blk := table[int64(b)*g.blockSize : min(int64(b+1)*g.blockSize, int64(len(table)))]
			if _, err := f.WriteAt(blk, at+int64(b)*g.blockSize); err != nil {
				return changed, fmt.Errorf("writing inode table of group %d: %w", grp, err)
			}
		}
	}
	return changed, nil
}

// setInodeTimes sets the times of the inode raw, number ino, to t and
// refreshes its checksum; it reports whether anything changed.
func setInodeTimes(raw []byte, ino, t uint32, g ext4Geometry) bool {
	le := binary.LittleEndian
	changed := false
	put := func(off int, v uint32) {
		if le.Uint32(raw[off:]) != v {
			le.PutUint32(raw[off:], v)
			changed = true
		}
	}
	put(iAtime, t)
	put(iCtime, t)
	put(iMtime, t)
	extra := 0
	if g.inodeSize > goodOldInode {
		extra = int(le.Uint16(raw[iExtraIsize:]))
	}
	fits := func(field, size int) bool { return field+size <= goodOldInode+extra }
	for _, f := range []int{iCtimeExtra, iMtimeExtra, iAtimeExtra, iCrtimeExtra} {
		if fits(f, 4) {
			put(f, 0)
		}
	}
	if fits(iCrtime, 4) {
		put(iCrtime, t)
	}
	if !changed || !g.metaCsum {
		return changed
	}
	hasHi := fits(iChecksumHi, 2)
	le.PutUint16(raw[iChecksumLo:], 0)
	if hasHi {
		le.PutUint16(raw[iChecksumHi:], 0)
	}
	var num [8]byte
	le.PutUint32(num[0:], ino)
	le.PutUint32(num[4:], le.Uint32(raw[iGeneration:]))
	csum := crc32c(crc32c(g.csumSeed, num[0:4]), num[4:8])
	csum = crc32c(csum, raw[:g.inodeSize])
	le.PutUint16(raw[iChecksumLo:], uint16(csum))
	if hasHi {
		le.PutUint16(raw[iChecksumHi:], uint16(csum>>16))
	}
	return true
}
