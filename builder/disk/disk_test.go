package disk

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kiln-dev/kiln/internal/testenv"
)

var testSeed = []byte("inputs digest of the test image")

// testSpec returns a Spec for the test kernel, a small initrd and root.
func testSpec(t *testing.T, root string) Spec {
	t.Helper()
	return Spec{
		Kernel:  kernel(t),
		Initrd:  writeFile(t, "initrd", bytes.Repeat([]byte("initrd!"), 30000)),
		Cmdline: "console=ttyS0 quiet",
		Root:    root,
		Seed:    testSeed,
		Log:     testLogger(t),
	}
}

// sfdiskTable is the part of sfdisk --json output the tests check.
type sfdiskTable struct {
	PartitionTable struct {
		Label      string `json:"label"`
		ID         string `json:"id"`
		FirstLBA   int64  `json:"firstlba"`
		SectorSize int64  `json:"sectorsize"`
		Partitions []struct {
			Start int64  `json:"start"`
			Size  int64  `json:"size"`
			Type  string `json:"type"`
			UUID  string `json:"uuid"`
			Name  string `json:"name"`
		} `json:"partitions"`
	} `json:"partitiontable"`
}

// readTable returns the partition table of img as sfdisk reads it.
func readTable(t *testing.T, img string) sfdiskTable {
	t.Helper()
	var tab sfdiskTable
	if err := json.Unmarshal([]byte(run(t, "sfdisk", "--json", img)), &tab); err != nil {
		t.Fatal(err)
	}
	return tab
}

// TestWrite writes an image and checks it with sfdisk, fsck.vfat,
// mtools, e2fsck, debugfs and dumpe2fs.
func TestWrite(t *testing.T) {
	testenv.NeedTools(t, "mke2fs", "sfdisk", "fsck.vfat", "e2fsck", "debugfs", "dumpe2fs", "mdir", "mcopy", "mtype")
	s := testSpec(t, makeRoot(t, time.Date(2021, 3, 4, 5, 6, 7, 8, time.UTC), false))
	out := filepath.Join(t.TempDir(), "disk.img")
	start := time.Now()
	if err := Write(context.Background(), out, s); err != nil {
		t.Fatal(err)
	}
	t.Logf("Write took %v", time.Since(start))

	fi, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	if alloc := fi.Sys().(*syscall.Stat_t).Blocks * 512; alloc > fi.Size()/2 {
		t.Errorf("image uses %d bytes on disk of %d: not sparse", alloc, fi.Size())
	}

	tab := readTable(t, out).PartitionTable
	if tab.Label != "gpt" || tab.SectorSize != 512 || len(tab.Partitions) != 2 {
		t.Fatalf("sfdisk --json: %+v, want a GPT of two partitions with 512-byte sectors", tab)
	}
	esp, root := tab.Partitions[0], tab.Partitions[1]
	up := strings.ToUpper
	got := []string{tab.ID, esp.Name, esp.Type, esp.UUID, root.Name, root.Type, root.UUID}
	want := []string{up(deriveGUID(testSeed, "disk")),
		"esp", "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", up(deriveGUID(testSeed, "esp")),
		"root", "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709", up(RootPartitionGUID(testSeed))}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("partition table (-want +got):\n%s", diff)
	}
	const mibSectors = mib / 512
	if esp.Start != mibSectors || esp.Size < 64*mibSectors || esp.Size%mibSectors != 0 || root.Start != esp.Start+esp.Size || root.Size%mibSectors != 0 {
		t.Errorf("partitions at %d+%d and %d+%d sectors, want the ESP at 1 MiB, of 64 MiB or more, then the root, all aligned to 1 MiB",
			esp.Start, esp.Size, root.Start, root.Size)
	}
	if end := (root.Start + root.Size + mibSectors) * 512; fi.Size() != end {
		t.Errorf("image has %d bytes, want %d (1 MiB after the root partition)", fi.Size(), end)
	}
	checkESP(t, extract(t, out, esp.Start*512, esp.Size*512), s, RootPartitionGUID(testSeed))
	checkRootFS(t, extract(t, out, root.Start*512, root.Size*512))
}

// checkESP checks the ESP image p with fsck.vfat and mtools.
func checkESP(t *testing.T, p string, s Spec, rootGUID string) {
	t.Helper()
	run(t, "fsck.vfat", "-n", p)

	list := strings.Fields(run(t, "mdir", "-i", p, "-/", "-b", "::"))
	wantList := []string{"::/EFI/", "::/EFI/BOOT/", "::/EFI/BOOT/BOOTX64.EFI", "::/kiln/", "::/kiln/initrd", "::/kiln/vmlinuz",
		"::/loader/", "::/loader/entries/", "::/loader/entries/kiln.conf", "::/loader/loader.conf"}
	slices.Sort(list)
	if diff := cmp.Diff(wantList, list); diff != "" {
		t.Errorf("mdir -/ -b (-want +got):\n%s", diff)
	}
	if dirs := run(t, "mdir", "-i", p, "-/", "::"); strings.Count(dirs, "1980-01-01") < len(wantList) {
		t.Errorf("mdir -/ shows other dates than 1980-01-01:\n%s", dirs)
	}
	wantEntry := "title kiln\nlinux /kiln/vmlinuz\ninitrd /kiln/initrd\noptions console=ttyS0 quiet root=PARTUUID=" + rootGUID + " rw\n"
	if got := run(t, "mtype", "-i", p, "::/loader/entries/kiln.conf"); got != wantEntry {
		t.Errorf("kiln.conf = %q, want %q", got, wantEntry)
	}
	if got := run(t, "mtype", "-i", p, "::/loader/loader.conf"); got != loaderConf {
		t.Errorf("loader.conf = %q, want %q", got, loaderConf)
	}
	dir := t.TempDir()
	for name, src := range map[string]string{
		"/EFI/BOOT/BOOTX64.EFI": DefaultBootloader,
		"/kiln/vmlinuz":         s.Kernel,
		"/kiln/initrd":          s.Initrd,
	} {
		dst := filepath.Join(dir, filepath.Base(name))
		run(t, "mcopy", "-i", p, "::"+name, dst)
		if a, b := fileSHA256(t, dst), fileSHA256(t, src); a != b {
			t.Errorf("ESP %s has sha256 %s, want %s (of %s)", name, a, b, src)
		}
	}
}

// inodeStat is what debugfs stat tells of an inode.
type inodeStat struct {
	Inode, Type, Mode string
	User, Group       int
	Links             int
	Times             []string // ctime, atime, mtime, crtime
}

var (
	statInode = regexp.MustCompile(`Inode: (\d+)\s+Type: (\S+)\s+Mode:\s+(\d+)`)
	statOwner = regexp.MustCompile(`User:\s+(\d+)\s+Group:\s+(\d+)`)
	statLinks = regexp.MustCompile(`Links: (\d+)`)
	statTime  = regexp.MustCompile(`(?m)^\s*(?:c|a|m|cr)time: (0x[0-9a-f]+:[0-9a-f]+)`)
)

func debugfsStat(t *testing.T, img, path string) inodeStat {
	t.Helper()
	out := run(t, "debugfs", "-R", "stat "+path, img)
	m := statInode.FindStringSubmatch(out)
	o := statOwner.FindStringSubmatch(out)
	l := statLinks.FindStringSubmatch(out)
	if m == nil || o == nil || l == nil {
		t.Fatalf("debugfs stat %s: cannot parse %q", path, out)
	}
	st := inodeStat{Inode: m[1], Type: m[2], Mode: m[3]}
	st.User, _ = strconv.Atoi(o[1])
	st.Group, _ = strconv.Atoi(o[2])
	st.Links, _ = strconv.Atoi(l[1])
	for _, tm := range statTime.FindAllStringSubmatch(out, -1) {
		st.Times = append(st.Times, tm[1])
	}
	return st
}

// checkRootFS checks the root file system image p with e2fsck, debugfs
// and dumpe2fs against testRoot.
func checkRootFS(t *testing.T, p string) {
	t.Helper()
	run(t, "e2fsck", "-fn", p)

	epochTimes := []string{"0x12cea600:00000000", "0x12cea600:00000000", "0x12cea600:00000000", "0x12cea600:00000000"}
	check := func(path, typ, mode string, uid, links int) inodeStat {
		t.Helper()
		got := debugfsStat(t, p, path)
		want := inodeStat{Inode: got.Inode, Type: typ, Mode: mode, User: uid, Group: uid, Links: links, Times: epochTimes}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("debugfs stat %s (-want +got):\n%s", path, diff)
		}
		return got
	}
	check("/", "directory", "0755", 0, 3+len(subdirs("."))) // with lost+found
	for _, e := range testRoot() {
		typ, mode, links := "regular", e.mode, 1
		switch {
		case e.hardlink != "":
			continue
		case e.mode.IsDir():
			typ, links = "directory", 2+len(subdirs(e.path))
		case e.mode&os.ModeSymlink != 0:
			typ = "symlink"
		case e.path == "bin/tool":
			links = 2
		}
		perm := uint32(mode.Perm())
		if mode&os.ModeSetuid != 0 {
			perm |= 0o4000
		}
		if mode&os.ModeSticky != 0 {
			perm |= 0o1000
		}
		check("/"+e.path, typ, "0"+strconv.FormatUint(uint64(perm), 8), e.uid, links)
	}
	if a, b := debugfsStat(t, p, "/bin/tool"), debugfsStat(t, p, "/bin/tool2"); a.Inode != b.Inode {
		t.Errorf("/bin/tool2 is inode %s, /bin/tool %s: want one hard-linked inode", b.Inode, a.Inode)
	}
	if st := run(t, "debugfs", "-R", "stat /etc/link", p); !strings.Contains(st, `Fast link dest: "passwd"`) {
		t.Errorf("debugfs stat /etc/link shows no target passwd:\n%s", st)
	}
	for path, want := range map[string]string{"/etc/long": longTarget, "/etc/passwd": "root:x:0:0:root:/root:/bin/sh\n"} {
		if got := run(t, "debugfs", "-R", "cat "+path, p); got != want {
			t.Errorf("debugfs cat %s = %q, want %q", path, got, want)
		}
	}

	sb := run(t, "dumpe2fs", "-h", p)
	for _, want := range []string{
		"Filesystem volume name:   root",
		"Filesystem UUID:          " + deriveGUID(testSeed, "ext4-uuid"),
		"Directory Hash Seed:      " + deriveGUID(testSeed, "ext4-hash-seed"),
		"Filesystem created:       Tue Jan  1 00:00:00 1980",
	} {
		if !strings.Contains(sb, want) {
			t.Errorf("dumpe2fs -h has no %q:\n%s", want, sb)
		}
	}
	if strings.Contains(sb, "orphan_file") {
		t.Errorf("root file system has orphan_file, which older kernels cannot mount")
	}
	m := regexp.MustCompile(`Free blocks:\s+(\d+)`).FindStringSubmatch(sb)
	if m == nil {
		t.Fatalf("dumpe2fs -h has no free block count:\n%s", sb)
	}
	if free, _ := strconv.ParseInt(m[1], 10, 64); free*4096 < 64*mib {
		t.Errorf("root file system has %d bytes free, want at least the default slack of 64 MiB", free*4096)
	}
}

// subdirs returns the directories right under dir in testRoot.
func subdirs(dir string) []string {
	var ds []string
	for _, e := range testRoot() {
		if e.mode.IsDir() && filepath.Dir(e.path) == dir {
			ds = append(ds, e.path)
		}
	}
	return ds
}

// TestESPSizes writes images with ESPs of several sizes, on both sides of
// go-diskfs's switch from 512-byte to 4 KiB clusters at 260 MiB, and
// checks each ESP with fsck.vfat. 64 MiB is one of the sizes whose FATs
// go-diskfs makes too small.
func TestESPSizes(t *testing.T) {
	testenv.NeedTools(t, "mke2fs", "sfdisk", "fsck.vfat")
	root := makeRoot(t, time.Unix(0, 0), false)
	for _, size := range []int64{36 * mib, 64 * mib, 100*mib + 1, 300 * mib} {
		t.Run(strconv.FormatInt(size, 10), func(t *testing.T) {
			s := testSpec(t, root)
			s.ESPSize = size
			s.Log = nil
			out := filepath.Join(t.TempDir(), "disk.img")
			if err := Write(context.Background(), out, s); err != nil {
				t.Fatal(err)
			}
			esp := readTable(t, out).PartitionTable.Partitions[0]
			if got := esp.Size * 512; got < size || got%mib != 0 || got > size+8*mib {
				t.Errorf("ESP of %d bytes, want %d rounded up to a few MiB", got, size)
			}
			run(t, "fsck.vfat", "-n", extract(t, out, esp.Start*512, esp.Size*512))
		})
	}
}
