package iso

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/filesystem/fat16"
	"github.com/diskfs/go-diskfs/filesystem/fat32"
)

const (
	kib = 1 << 10
	mib = 1 << 20

	// maxISOFile is the largest file in a single ISO 9660 extent, a
	// multiple of the 2 KiB block.
	maxISOFile = 1<<32 - 2*kib
	// fat16Max is the largest FAT image made FAT16; larger ones are FAT32.
	fat16Max = 1 << 30
	// minFAT keeps FAT16 above its 4085-cluster floor.
	minFAT = 8 * mib
	// minFAT32 keeps FAT32 above its 65525-cluster floor (512-byte
	// clusters up to 260 MB).
	minFAT32 = 40 * mib
	// maxCluster is the largest cluster go-diskfs uses up to fat16Max
	// (32 KiB at 1-2 GiB FAT16; FAT32 uses 4 KiB clusters up to 8 GiB).
	maxCluster = 32 * kib
	// writeChunk is the size of each write into the FAT image: go-diskfs
	// rewrites the FAT and the directory on every write.
	writeChunk = 4 * mib
)

// efiSpec describes the FAT image of the UEFI boot entry.
type efiSpec struct {
	kernel, initrd, bootloader string // host paths; initrd may be ""
	loaderConf, entry          []byte
	label                      string
	volumeID                   []byte // 4 bytes
	fat32                      bool   // force FAT32, for tests
}

// fatInfo describes a written FAT image.
type fatInfo struct {
	fsType string // "fat16" or "fat32"
	size   int64
}

// fatFile is a file of the FAT image: a host file or bytes.
type fatFile struct {
	name string // path in the image, without a leading slash
	src  string // host path, or "" for data
	data []byte
	size int64
}

// writeEFIImage writes the FAT image of s as the new file p.
func writeEFIImage(ctx context.Context, p string, s efiSpec) (fatInfo, error) {
	files := []fatFile{
		{name: fatBootloader, src: s.bootloader},
		{name: fatLoaderConf, data: s.loaderConf},
		{name: fatEntry, data: s.entry},
		{name: isoKernel, src: s.kernel},
	}
	if s.initrd != "" {
		files = append(files, fatFile{name: isoInitrd, src: s.initrd})
	}
	for i := range files {
		f := &files[i]
		if f.src == "" {
			f.size = int64(len(f.data))
			continue
		}
		fi, err := os.Stat(f.src)
		if err != nil {
			return fatInfo{}, err
		}
		f.size = fi.Size()
	}
	size := fatSize(files)
	if s.fat32 {
		size = max(size, minFAT32)
	}
	if size > maxISOFile {
		return fatInfo{}, fmt.Errorf("%d bytes of boot files do not fit a FAT image below 4 GiB", size)
	}

	img, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fatInfo{}, err
	}
	defer img.Close()
	if err := img.Truncate(size); err != nil {
		return fatInfo{}, err
	}
	info := fatInfo{size: size}
	var fs filesystem.FileSystem
	b := file.New(img, false)
	if s.fat32 || size > fat16Max {
		info.fsType = "fat32"
		fs, err = fat32.Create(b, size, 0, 512, s.label, true)
	} else {
		info.fsType = "fat16"
		fs, err = fat16.Create(b, size, 0, 512, s.label, true)
	}
	if err != nil {
		return fatInfo{}, fmt.Errorf("creating %s file system: %w", info.fsType, err)
	}
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return fatInfo{}, err
		}
		if err := writeFATFile(fs, f); err != nil {
			return fatInfo{}, fmt.Errorf("adding /%s: %w", f.name, err)
		}
	}
	if err := normalizeFAT(img, s.volumeID); err != nil {
		return fatInfo{}, err
	}
	return info, img.Close()
}

// fatSize is the size of a FAT image that holds files: their clusters at
// the largest cluster size, room for the directories, the FATs and the
// root directory, rounded up to a MiB.
func fatSize(files []fatFile) int64 {
	var n int64 = 16 * maxCluster // directories
	for _, f := range files {
		n += (f.size + maxCluster - 1) / maxCluster * maxCluster
	}
	n += n/256 + mib // FATs (2 x 4 bytes per 1 KiB cluster at worst), root, reserved
	n = (n + mib - 1) / mib * mib
	return max(n, minFAT)
}

// writeFATFile adds f to fs, creating its directory.
func writeFATFile(fs filesystem.FileSystem, f fatFile) error {
	if err := fs.Mkdir("/" + path.Dir(f.name)); err != nil {
		return err
	}
	w, err := fs.OpenFile("/"+f.name, os.O_CREATE|os.O_RDWR)
	if err != nil {
		return err
	}
	defer w.Close()
	if f.src == "" {
		_, err := w.Write(f.data)
		return err
	}
	r, err := os.Open(f.src)
	if err != nil {
		return err
	}
	defer r.Close()
	buf := make([]byte, min(max(f.size, 1), writeChunk))
	var done int64
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return err
			}
			done += int64(n)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			return err
		}
	}
	if done != f.size {
		return fmt.Errorf("%s changed size while copying: %d bytes, want %d", f.src, done, f.size)
	}
	return nil
}
