package disk

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	ext4BlockSize  = 4096
	ext4InodeSize  = 256
	ext4InodeRatio = 16384 // bytes of file system per spare inode
)

// mke2fsConf is the whole mke2fs configuration Write uses, so that the
// host's /etc/mke2fs.conf does not change the image. The features are
// those of Debian 12's ext4 (without orphan_file, to keep older kernels
// able to mount it).
const mke2fsConf = `[defaults]
	base_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
	default_mntopts = acl,user_xattr
	enable_periodic_fsck = 0
	hash_alg = half_md4

[fs_types]
	ext4 = {
		features = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
	}
	default = {
	}
`

// rootUsage estimates what a root tree takes in ext4.
type rootUsage struct {
	bytes  int64 // blocks of files, directories and long symlinks
	inodes int64 // files, directories, links and others; hard links once
}

// scanRoot walks root and estimates its usage. A file larger than limit
// (if positive) is an error.
func scanRoot(ctx context.Context, root string, limit int64) (rootUsage, error) {
	type fileID struct{ dev, ino uint64 }
	seen := map[fileID]bool{}
	var u rootUsage
	var dirents int64
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if u.inodes%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		dirents += 8 + (int64(len(d.Name()))+3)&^3
		switch {
		case fi.IsDir():
			u.inodes++
			u.bytes += ext4BlockSize
		case fi.Mode().IsRegular():
			if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 {
				id := fileID{uint64(st.Dev), st.Ino}
				if seen[id] {
					return nil
				}
				seen[id] = true
			}
			if limit > 0 && fi.Size() > limit {
				return fmt.Errorf("root file %s has %d bytes, more than the image size limit of %d", p, fi.Size(), limit)
			}
			u.inodes++
			// Data blocks, and an extent block per 512 MiB.
			u.bytes += (fi.Size()+ext4BlockSize-1)/ext4BlockSize*ext4BlockSize + fi.Size()/(512<<20)*ext4BlockSize
		case fi.Mode()&fs.ModeSymlink != 0:
			u.inodes++
			if fi.Size() >= 60 { // longer targets do not fit in the inode
				u.bytes += ext4BlockSize
			}
		default: // devices, FIFOs, sockets
			u.inodes++
		}
		return nil
	})
	if err != nil {
		return rootUsage{}, fmt.Errorf("scanning root %s: %w", root, err)
	}
	// Directory blocks fill partly; leave room for the entries twice over.
	u.bytes += 2 * dirents
	return u, nil
}

// rootPlan sizes the root file system.
type rootPlan struct {
	size    int64 // bytes, a multiple of 1 MiB
	inodes  int64
	journal int64 // MiB
}

// planRoot sizes a root file system holding u with slack bytes free
// (zero: 10% of u plus 64 MiB) besides the 5% reserved for root.
func planRoot(u rootUsage, slack int64) rootPlan {
	if slack == 0 {
		slack = u.bytes/10 + 64*mib
	}
	base := u.bytes + slack
	p := rootPlan{inodes: u.inodes + base/ext4InodeRatio + 256}
	switch {
	case base < 512*mib:
		p.journal = 16
	case base < 4<<30:
		p.journal = 32
	default:
		p.journal = 64
	}
	// Inode tables, bitmaps, group descriptors and their reserve for
	// resizing, and the journal; then 5% reserved blocks.
	size := base + p.inodes*ext4InodeSize + base/50 + 4*mib + p.journal*mib
	size += size / 19
	p.size = alignMiB(size)
	return p
}

// makeRootFS makes the root file system from the tree at root, with mke2fs
// -d, in f at l.rootStart, then sets every timestamp in it to epoch.
func makeRootFS(ctx context.Context, f *os.File, l layout, root string, seed []byte, log *slog.Logger) error {
	bin, err := findTool("mke2fs")
	if err != nil {
		return err
	}
	conf, err := os.CreateTemp("", "kiln-mke2fs-*.conf")
	if err != nil {
		return fmt.Errorf("writing mke2fs config: %w", err)
	}
	defer os.Remove(conf.Name())
	_, err = conf.WriteString(mke2fsConf)
	if cerr := conf.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing mke2fs config: %w", err)
	}

	ext := []string{
		"offset=" + strconv.FormatInt(l.rootStart, 10),
		"hash_seed=" + deriveGUID(seed, "ext4-hash-seed"),
		"root_owner=0:0",
		// The file is new, all zeros: skip zeroing inode tables and
		// the journal, and mark them zeroed for the kernel too.
		"assume_storage_prezeroed=1",
	}
	args := []string{
		"-t", "ext4", "-T", "default", "-q", "-F",
		"-b", strconv.Itoa(ext4BlockSize), "-I", strconv.Itoa(ext4InodeSize),
		"-N", strconv.FormatInt(l.root.inodes, 10),
		"-J", "size=" + strconv.FormatInt(l.root.journal, 10),
		"-m", "5",
		"-L", RootName,
		"-U", deriveGUID(seed, "ext4-uuid"),
		"-E", strings.Join(ext, ","),
		"-d", root,
		f.Name(),
		strconv.FormatInt(l.root.size/ext4BlockSize, 10),
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	epochStr := strconv.Itoa(epoch)
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"MKE2FS_CONFIG=" + conf.Name(),
		"E2FSPROGS_FAKE_TIME=" + epochStr,
		"SOURCE_DATE_EPOCH=" + epochStr,
		"LC_ALL=C", // -d sorts names with strcoll
		"TZ=UTC",
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	log.Debug("making root file system", "cmd", cmd.String())
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("making root file system: %s: %w: %s", bin, err, strings.TrimSpace(out.String()))
	}
	log.Debug("made root file system", "took", time.Since(start), "output", strings.TrimSpace(out.String()))
	start = time.Now()
	n, err := setExt4Times(f, l.rootStart, epoch)
	if err != nil {
		return fmt.Errorf("setting root file system timestamps: %w", err)
	}
	log.Debug("set root file system timestamps", "inodes", n, "took", time.Since(start))
	return nil
}

// findTool looks name up in PATH, then in /usr/sbin and /sbin, which
// PATH of a non-root user often lacks.
func findTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("finding %s: not in PATH, /usr/sbin or /sbin", name)
}
