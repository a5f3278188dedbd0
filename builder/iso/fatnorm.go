package iso

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

// maxFATBytes bounds the FAT normalizeFAT reads: 4 bytes for each of the
// 1 Mi 4 KiB clusters of a 4 GiB FAT32 image, with room to spare.
const maxFATBytes = 16 << 20

// readWriterAt is a random-access file, such as *os.File.
type readWriterAt interface {
	io.ReaderAt
	io.WriterAt
}

// fatDate and fatTime are epoch in FAT's DOS format: date = (year-1980)<<9
// | month<<5 | day, time = hour<<11 | minute<<5 | second/2.
var fatDate, fatTime = dosDateTime(epoch)

func dosDateTime(t time.Time) (date, tm uint16) {
	date = uint16((t.Year()-1980)<<9 | int(t.Month())<<5 | t.Day())
	tm = uint16(t.Hour()<<11 | t.Minute()<<5 | t.Second()/2)
	return date, tm
}

// fatLayout is what normalizeFAT needs of a FAT12/16/32 boot sector
// (Microsoft FAT specification, "BPB").
type fatLayout struct {
	bytesPerSector    int64
	sectorsPerCluster int64
	fatStart          int64 // byte offset of the first FAT
	fatBytes          int64
	rootStart         int64 // FAT12/16: byte offset of the fixed root directory
	rootBytes         int64 // FAT12/16: its size; 0 on FAT32
	dataStart         int64 // byte offset of cluster 2
	fats              int64
	clusters          uint32 // data clusters; the last is clusters+1
	rootCluster       uint32
	fat32             bool
	backupBoot        int64 // FAT32: sector of the backup boot sector
	fsInfo            int64 // FAT32: sector of the FSInfo sector
}

func parseFATLayout(bs []byte) (fatLayout, error) {
	le16 := func(o int) int64 { return int64(binary.LittleEndian.Uint16(bs[o:])) }
	le32 := func(o int) int64 { return int64(binary.LittleEndian.Uint32(bs[o:])) }
	l := fatLayout{bytesPerSector: le16(11), sectorsPerCluster: int64(bs[13])}
	if bs[510] != 0x55 || bs[511] != 0xaa {
		return fatLayout{}, errors.New("no FAT boot sector")
	}
	if b := l.bytesPerSector; b < 512 || b > 4096 || b&(b-1) != 0 {
		return fatLayout{}, fmt.Errorf("bad sector size %d", b)
	}
	if c := l.sectorsPerCluster; c == 0 || c&(c-1) != 0 || c > 128 {
		return fatLayout{}, fmt.Errorf("bad cluster size %d", c)
	}
	reserved, fats, rootEntries := le16(14), int64(bs[16]), le16(17)
	fatSectors := le16(22)
	if fatSectors == 0 {
		fatSectors = le32(36)
		l.fat32 = true
		l.rootCluster = uint32(le32(44))
		l.backupBoot = le16(50)
		l.fsInfo = le16(48)
	}
	l.fatStart = reserved * l.bytesPerSector
	l.fatBytes = fatSectors * l.bytesPerSector
	l.rootStart = l.fatStart + fats*l.fatBytes
	l.rootBytes = rootEntries * 32
	rootSectors := (l.rootBytes + l.bytesPerSector - 1) / l.bytesPerSector
	l.dataStart = l.rootStart + rootSectors*l.bytesPerSector
	l.fats = fats
	total := le16(19)
	if total == 0 {
		total = le32(32)
	}
	l.clusters = uint32((total*l.bytesPerSector - l.dataStart) / (l.bytesPerSector * l.sectorsPerCluster))
	entry := int64(2)
	if l.fat32 {
		entry = 4
	}
	if l.fats == 0 || l.fatBytes > maxFATBytes || l.dataStart >= total*l.bytesPerSector ||
		int64(l.clusters+2)*entry > l.fatBytes {
		return fatLayout{}, errors.New("inconsistent FAT boot sector")
	}
	return l, nil
}

// normalizeFAT makes a FAT image that go-diskfs wrote reproducible and
// clean for fsck.fat. Walking the directory tree from the root, in every
// directory entry other than long-name slots it rewrites:
//
//   - creation time, tenths of seconds (byte 13) to 0,
//   - creation time and date (bytes 14-17), last access date (bytes 18-19)
//     and last write time and date (bytes 22-25) to epoch,
//   - on FAT32, the cluster of ".." (bytes 20-21, 26-27) to 0 where it
//     names the root directory, as the FAT specification requires.
//
// It sets the volume serial number of the boot sector (byte 39 on FAT12/16,
// byte 67 on FAT32, and in the FAT32 backup boot sector) to id. It frees, in
// every FAT copy, clusters marked used that no file or directory holds. On
// FAT32 it records the free cluster count (byte 488) in the FSInfo sector
// and its backup.
func normalizeFAT(f readWriterAt, id []byte) error {
	bs := make([]byte, 512)
	if _, err := f.ReadAt(bs, 0); err != nil {
		return fmt.Errorf("reading fat boot sector: %w", err)
	}
	l, err := parseFATLayout(bs)
	if err != nil {
		return fmt.Errorf("reading fat boot sector: %w", err)
	}
	serial := int64(39)
	if l.fat32 {
		serial = 67
	}
	if _, err := f.WriteAt(id[:4], serial); err != nil {
		return err
	}
	if l.fat32 && l.backupBoot != 0 {
		if _, err := f.WriteAt(id[:4], l.backupBoot*l.bytesPerSector+serial); err != nil {
			return err
		}
	}
	fat := make([]byte, l.fatBytes)
	if _, err := f.ReadAt(fat, l.fatStart); err != nil {
		return fmt.Errorf("reading fat: %w", err)
	}
	w := fatWalker{f: f, l: l, fat: fat, used: map[uint32]bool{}}
	if l.fat32 {
		err = w.dir(l.rootCluster)
	} else {
		err = w.region(l.rootStart, l.rootBytes)
	}
	if err != nil {
		return err
	}
	w.reclaim()
	for i := int64(0); i < l.fats; i++ {
		if _, err := f.WriteAt(fat, l.fatStart+i*l.fatBytes); err != nil {
			return err
		}
	}
	if l.fat32 {
		return w.setFreeCount()
	}
	return nil
}

// setFreeCount records the number of free clusters in the FAT32 FSInfo
// sector and its backup, where go-diskfs leaves "unknown".
func (w *fatWalker) setFreeCount() error {
	var free uint32
	for c := uint32(2); c < w.l.clusters+2; c++ {
		if w.get(c) == 0 {
			free++
		}
	}
	sectors := []int64{w.l.fsInfo}
	if w.l.backupBoot != 0 {
		sectors = append(sectors, w.l.backupBoot+w.l.fsInfo)
	}
	b := make([]byte, 512)
	for _, sec := range sectors {
		off := sec * w.l.bytesPerSector
		if _, err := w.f.ReadAt(b, off); err != nil {
			return fmt.Errorf("reading fat32 fsinfo: %w", err)
		}
		if binary.LittleEndian.Uint32(b) != 0x41615252 || binary.LittleEndian.Uint32(b[484:]) != 0x61417272 {
			return fmt.Errorf("no fat32 fsinfo at sector %d", sec)
		}
		binary.LittleEndian.PutUint32(b[488:], free)
		if _, err := w.f.WriteAt(b, off); err != nil {
			return err
		}
	}
	return nil
}

// fatWalker rewrites the directory tree of a FAT image.
type fatWalker struct {
	f    readWriterAt
	l    fatLayout
	fat  []byte
	used map[uint32]bool // clusters of the files and directories found
}

// get is the FAT entry of cluster c.
func (w *fatWalker) get(c uint32) uint32 {
	if w.l.fat32 {
		return binary.LittleEndian.Uint32(w.fat[4*c:]) & 0x0fffffff
	}
	return uint32(binary.LittleEndian.Uint16(w.fat[2*c:]))
}

// next is the cluster after c in its chain, or 0 at the end.
func (w *fatWalker) next(c uint32) uint32 {
	n := w.get(c)
	if n < 2 || (w.l.fat32 && n >= 0x0ffffff8) || (!w.l.fat32 && n >= 0xfff8) {
		return 0
	}
	return n
}

// chain marks and lists the clusters of the chain that starts at c.
func (w *fatWalker) chain(c uint32) ([]uint32, error) {
	var cs []uint32
	for ; c != 0; c = w.next(c) {
		if c < 2 || c >= w.l.clusters+2 || w.used[c] {
			return nil, fmt.Errorf("bad fat chain at cluster %d", c)
		}
		w.used[c] = true
		cs = append(cs, c)
	}
	return cs, nil
}

// dir rewrites the directory whose chain starts at cluster c.
func (w *fatWalker) dir(c uint32) error {
	cs, err := w.chain(c)
	if err != nil {
		return err
	}
	size := w.l.bytesPerSector * w.l.sectorsPerCluster
	for _, c := range cs {
		if err := w.region(w.l.dataStart+int64(c-2)*size, size); err != nil {
			return err
		}
	}
	return nil
}

// reclaim frees the clusters that the FAT marks used but no file or
// directory holds, as fsck.fat would (go-diskfs marks cluster 2 of FAT16
// used for a root directory that FAT16 keeps elsewhere).
func (w *fatWalker) reclaim() {
	for c := uint32(2); c < w.l.clusters+2; c++ {
		if w.get(c) == 0 || w.used[c] {
			continue
		}
		if w.l.fat32 {
			v := binary.LittleEndian.Uint32(w.fat[4*c:]) & 0xf0000000
			binary.LittleEndian.PutUint32(w.fat[4*c:], v)
		} else {
			binary.LittleEndian.PutUint16(w.fat[2*c:], 0)
		}
	}
}

// region rewrites the directory entries at off, n bytes, then recurses
// into the subdirectories they name.
func (w *fatWalker) region(off, n int64) error {
	b := make([]byte, n)
	if _, err := w.f.ReadAt(b, off); err != nil {
		return fmt.Errorf("reading fat directory at %d: %w", off, err)
	}
	var subdirs []uint32
	for i := 0; i+32 <= len(b); i += 32 {
		e := b[i : i+32]
		if e[0] == 0 {
			break
		}
		if e[0] == 0xe5 || e[11]&0x3f == 0x0f { // deleted, long-name slot
			continue
		}
		e[13] = 0
		binary.LittleEndian.PutUint16(e[14:], fatTime)
		binary.LittleEndian.PutUint16(e[16:], fatDate)
		binary.LittleEndian.PutUint16(e[18:], fatDate)
		binary.LittleEndian.PutUint16(e[22:], fatTime)
		binary.LittleEndian.PutUint16(e[24:], fatDate)
		c := uint32(binary.LittleEndian.Uint16(e[26:]))
		if w.l.fat32 {
			c |= uint32(binary.LittleEndian.Uint16(e[20:])) << 16
		}
		if w.l.fat32 && string(e[:11]) == "..         " && c == w.l.rootCluster {
			// ".." of a child of the root is cluster 0 (FAT specification,
			// "FAT Directory Structure"); go-diskfs writes the root's.
			binary.LittleEndian.PutUint16(e[20:], 0)
			binary.LittleEndian.PutUint16(e[26:], 0)
		}
		switch {
		case e[0] == '.' || e[11]&0x08 != 0: // ".", "..", volume label
		case e[11]&0x10 != 0:
			subdirs = append(subdirs, c)
		default:
			if _, err := w.chain(c); err != nil {
				return fmt.Errorf("file %q: %w", e[:11], err)
			}
		}
	}
	if _, err := w.f.WriteAt(b, off); err != nil {
		return err
	}
	for _, c := range subdirs {
		if err := w.dir(c); err != nil {
			return err
		}
	}
	return nil
}
