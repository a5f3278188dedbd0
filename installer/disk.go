package installer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// diskPrefixes are the whole-disk names PickDisk considers, in order of
// preference.
var diskPrefixes = []string{"nvme", "vd", "sd", "xvd"}

// PickDisk chooses the install target from a sysfs block directory
// (normally /sys/block) and returns its device path, "/dev/<name>". It
// takes the first disk, nvme* before vd* before sd* before xvd* and in
// natural order within each (sda, sdb, ..., sdz, sdaa; nvme2n1 before
// nvme10n1), that is not removable, not read-only, not a hidden NVMe path,
// and holds at least minSize bytes (its "size" file counts 512-byte
// sectors). The error lists every disk seen and why it was skipped.
func PickDisk(sysBlock string, minSize int64) (string, error) {
	entries, err := os.ReadDir(sysBlock)
	if err != nil {
		return "", fmt.Errorf("picking disk: %w", err)
	}
	var names []string
	for _, e := range entries {
		if diskRank(e.Name()) >= 0 {
			names = append(names, e.Name())
		}
	}
	slices.SortFunc(names, compareDisks)
	var skipped []string
	for _, name := range names {
		why := diskUnfit(filepath.Join(sysBlock, name), minSize)
		if why == "" {
			return "/dev/" + name, nil
		}
		skipped = append(skipped, name+": "+why)
	}
	if len(skipped) == 0 {
		return "", fmt.Errorf("picking disk: no nvme*, vd*, sd* or xvd* disk in %s", sysBlock)
	}
	return "", fmt.Errorf("picking disk: no disk of at least %d bytes that is writable and not removable (%s)", minSize, strings.Join(skipped, "; "))
}

// diskUnfit says why the disk at dir cannot be the target, or "" if it can.
func diskUnfit(dir string, minSize int64) string {
	for _, attr := range []string{"removable", "ro", "hidden"} {
		v, err := readAttr(dir, attr)
		if errors.Is(err, os.ErrNotExist) && attr == "hidden" {
			continue
		}
		if err != nil {
			return err.Error()
		}
		if v != "0" {
			return attr
		}
	}
	v, err := readAttr(dir, "size")
	if err != nil {
		return err.Error()
	}
	sectors, err := strconv.ParseInt(v, 10, 64)
	if err != nil || sectors < 0 || sectors > (1<<63-1)/512 {
		return fmt.Sprintf("bad size %q", v)
	}
	if size := sectors * 512; size < minSize {
		return fmt.Sprintf("%d bytes, too small", size)
	}
	return ""
}

func readAttr(dir, name string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// diskRank is the index of name's prefix in diskPrefixes, or -1. "sr0",
// "loop0", "dm-0" and the like are not disks to install on. A
// prefix must be followed by a letter (vda, sda, xvda) or, for nvme, a
// digit.
func diskRank(name string) int {
	for i, p := range diskPrefixes {
		rest, ok := strings.CutPrefix(name, p)
		if !ok || rest == "" {
			continue
		}
		c := rest[0]
		if p == "nvme" && c >= '0' && c <= '9' || p != "nvme" && c >= 'a' && c <= 'z' {
			return i
		}
	}
	return -1
}

// compareDisks orders disk names by prefix rank, then naturally: runs of
// digits compare as numbers and shorter letter runs first (sdz < sdaa).
func compareDisks(a, b string) int {
	if ra, rb := diskRank(a), diskRank(b); ra != rb {
		return ra - rb
	}
	if len(a) != len(b) && !strings.ContainsAny(a+b, "0123456789") {
		return len(a) - len(b)
	}
	return naturalCompare(a, b)
}

// naturalCompare compares strings with digit runs as numbers.
func naturalCompare(a, b string) int {
	for a != "" && b != "" {
		da, db := digitRun(a), digitRun(b)
		if da > 0 && db > 0 {
			na, _ := strconv.ParseUint(a[:min(da, 18)], 10, 64)
			nb, _ := strconv.ParseUint(b[:min(db, 18)], 10, 64)
			if na != nb {
				if na < nb {
					return -1
				}
				return 1
			}
			a, b = a[da:], b[db:]
			continue
		}
		if a[0] != b[0] {
			return int(a[0]) - int(b[0])
		}
		a, b = a[1:], b[1:]
	}
	return len(a) - len(b)
}

func digitRun(s string) int {
	n := 0
	for n < len(s) && s[n] >= '0' && s[n] <= '9' {
		n++
	}
	return n
}
