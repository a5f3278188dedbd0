package disk

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/partition/gpt"
)

const (
	sectorSize = 512
	// espLabel is the FAT volume label of the ESP.
	espLabel = "KILN-ESP"
	// copyChunk is how much of a boot file goes into one go-diskfs
	// write: each write rewrites both FATs.
	copyChunk = 8 << 20
)

// fat32Size returns the smallest multiple of 1 MiB, at least n, for
// which go-diskfs makes a FAT32 file system whose FATs map every cluster.
// Its sectors-per-FAT formula forgets the two reserved FAT entries, so for
// about one size in a hundred (64, 129, 194, 259, 505 MiB, ...) the last
// clusters have no FAT entry, which fsck.fat reports.
func fat32Size(n int64) int64 {
	for size := alignMiB(n); ; size += mib {
		// As fat32.Create in go-diskfs v1.9.4, for 512-byte sectors.
		const reserved = 32
		clusterBytes := int64(512)
		switch {
		case size <= 260*mib:
		case size <= 8<<30:
			clusterBytes = 4 << 10
		case size <= 16<<30:
			clusterBytes = 8 << 10
		case size <= 32<<30:
			clusterBytes = 16 << 10
		default:
			clusterBytes = 32 << 10
		}
		spc := clusterBytes / sectorSize
		total := size / sectorSize
		perFAT := (4*(total-reserved) + sectorSize*spc + 8 - 1) / (sectorSize*spc + 8)
		clusters := (total - reserved - 2*perFAT) / spc
		if clusters+2 <= perFAT*sectorSize/4 {
			return size
		}
	}
}

// loaderConf is /loader/loader.conf: boot the kiln entry without a menu.
const loaderConf = "default kiln.conf\ntimeout 0\neditor no\n"

// entry returns the text of /loader/entries/kiln.conf.
func entry(cmdline, rootGUID string, initrd bool) string {
	opts := "root=PARTUUID=" + rootGUID + " rw"
	if cmdline != "" {
		opts = cmdline + " " + opts
	}
	s := "title kiln\nlinux /kiln/vmlinuz\n"
	if initrd {
		s += "initrd /kiln/initrd\n"
	}
	return s + "options " + opts + "\n"
}

// writeGPTAndESP writes the protective MBR and the GPT of l into f, makes
// the FAT32 ESP and fills it.
func writeGPTAndESP(f *os.File, l layout, s Spec, boot []bootFile, log *slog.Logger) error {
	d, err := diskfs.OpenBackend(file.New(f, false), diskfs.WithOpenMode(diskfs.ReadWrite), diskfs.WithSectorSize(sectorSize))
	if err != nil {
		return fmt.Errorf("opening image: %w", err)
	}
	table := &gpt.Table{
		LogicalSectorSize:  sectorSize,
		PhysicalSectorSize: sectorSize,
		ProtectiveMBR:      true,
		GUID:               l.diskGUID,
		Partitions: []*gpt.Partition{{
			Index: 1,
			Start: uint64(l.espStart / sectorSize),
			Size:  uint64(l.espSize),
			Type:  gpt.EFISystemPartition,
			Name:  ESPName,
			GUID:  l.espGUID,
		}, {
			Index: 2,
			Start: uint64(l.rootStart / sectorSize),
			Size:  uint64(l.root.size),
			Type:  gpt.Type(RootType),
			Name:  RootName,
			GUID:  l.rootGUID,
		}},
	}
	if err := d.Partition(table); err != nil {
		return fmt.Errorf("writing partition table: %w", err)
	}
	err = withSourceDateEpoch(epoch, func() error { return fillESP(d, s, l, boot, log) })
	if err != nil {
		return err
	}
	if err := fixFAT32(f, l.espStart, deriveSerial(s.Seed, "esp-serial")); err != nil {
		return fmt.Errorf("mending ESP file system: %w", err)
	}
	return nil
}

// fillESP makes the FAT32 file system of partition 1 and writes the boot
// files into it.
func fillESP(d *disk.Disk, s Spec, l layout, boot []bootFile, log *slog.Logger) error {
	fsys, err := d.CreateFilesystem(disk.FilesystemSpec{
		Partition:    1,
		FSType:       filesystem.TypeFat32,
		VolumeLabel:  espLabel,
		Reproducible: true,
	})
	if err != nil {
		return fmt.Errorf("making ESP file system: %w", err)
	}
	for _, dir := range []string{"/EFI/BOOT", "/loader/entries", "/kiln"} {
		if err := fsys.Mkdir(dir); err != nil {
			return fmt.Errorf("making ESP directory %s: %w", dir, err)
		}
	}
	texts := []struct{ path, text string }{
		{"/loader/loader.conf", loaderConf},
		{"/loader/entries/kiln.conf", entry(s.Cmdline, l.rootGUID, s.Initrd != "")},
	}
	for _, t := range texts {
		if err := writeESPFile(fsys, t.path, []byte(t.text), nil); err != nil {
			return err
		}
	}
	buf := make([]byte, copyChunk)
	for _, b := range boot {
		src, err := os.Open(b.src)
		if err != nil {
			return fmt.Errorf("reading boot file: %w", err)
		}
		err = writeESPFile(fsys, b.path, buf, src)
		src.Close()
		if err != nil {
			return err
		}
		log.Debug("wrote ESP file", "path", b.path, "src", b.src, "size", b.size)
	}
	return nil
}

// writeESPFile writes name into fsys: the bytes of src if it is not nil,
// read through buf; else buf itself.
func writeESPFile(fsys filesystem.FileSystem, name string, buf []byte, src io.Reader) error {
	w, err := fsys.OpenFile(name, os.O_CREATE|os.O_RDWR)
	if err != nil {
		return fmt.Errorf("creating ESP file %s: %w", name, err)
	}
	defer w.Close()
	if src == nil {
		if _, err := w.Write(buf); err != nil {
			return fmt.Errorf("writing ESP file %s: %w", name, err)
		}
		return nil
	}
	for {
		n, rerr := io.ReadFull(src, buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return fmt.Errorf("writing ESP file %s: %w", name, err)
			}
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			return nil
		}
		if rerr != nil {
			return fmt.Errorf("reading boot file for %s: %w", name, rerr)
		}
	}
}

// envMu serializes the calls that set SOURCE_DATE_EPOCH.
var envMu sync.Mutex

// withSourceDateEpoch runs fn with SOURCE_DATE_EPOCH set to t in the
// process environment, where go-diskfs reads the time of FAT directory
// entries, and then restores it.
func withSourceDateEpoch(t int64, fn func() error) error {
	envMu.Lock()
	defer envMu.Unlock()
	old, had := os.LookupEnv("SOURCE_DATE_EPOCH")
	if err := os.Setenv("SOURCE_DATE_EPOCH", strconv.FormatInt(t, 10)); err != nil {
		return err
	}
	defer func() {
		if had {
			os.Setenv("SOURCE_DATE_EPOCH", old)
		} else {
			os.Unsetenv("SOURCE_DATE_EPOCH")
		}
	}()
	return fn()
}
