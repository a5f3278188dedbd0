package installer

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// blockAttrs are the sysfs attributes of one fake disk; "" means "0" for
// removable and ro, and absent for hidden.
type blockAttrs struct {
	size                  int64 // bytes; written as 512-byte sectors
	removable, ro, hidden string
	rawSize               string // written as is instead of size, if set
}

// makeBlock creates sysBlock/name with the attribute files.
func makeBlock(t *testing.T, sysBlock, name string, a blockAttrs) {
	t.Helper()
	dir := filepath.Join(sysBlock, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"size":      fmt.Sprintf("%d\n", a.size/512),
		"removable": or(a.removable, "0") + "\n",
		"ro":        or(a.ro, "0") + "\n",
	}
	if a.rawSize != "" {
		files["size"] = a.rawSize
	}
	if a.hidden != "" {
		files["hidden"] = a.hidden + "\n"
	}
	for f, v := range files {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func TestPickDisk(t *testing.T) {
	const min = 10 * MiB
	big := blockAttrs{size: 20 * MiB}
	tests := []struct {
		name    string
		disks   map[string]blockAttrs
		want    string
		wantErr string // substring
	}{
		{name: "one virtio disk", disks: map[string]blockAttrs{"vda": big}, want: "/dev/vda"},
		{name: "nvme before vd before sd before xvd", disks: map[string]blockAttrs{"xvda": big, "sda": big, "vdb": big, "nvme1n1": big}, want: "/dev/nvme1n1"},
		{name: "vd before sd", disks: map[string]blockAttrs{"sda": big, "vdc": big}, want: "/dev/vdc"},
		{name: "natural order of numbers", disks: map[string]blockAttrs{"nvme10n1": big, "nvme2n1": big}, want: "/dev/nvme2n1"},
		{name: "sdz before sdaa", disks: map[string]blockAttrs{"sdaa": big, "sdz": big}, want: "/dev/sdz"},
		{name: "removable skipped", disks: map[string]blockAttrs{"sda": {size: 20 * MiB, removable: "1"}, "sdb": big}, want: "/dev/sdb"},
		{name: "read-only skipped", disks: map[string]blockAttrs{"vda": {size: 20 * MiB, ro: "1"}, "vdb": big}, want: "/dev/vdb"},
		{name: "hidden nvme path skipped", disks: map[string]blockAttrs{"nvme0c0n1": {size: 20 * MiB, hidden: "1"}, "nvme0n1": {size: 20 * MiB, hidden: "0"}}, want: "/dev/nvme0n1"},
		{name: "too small skipped", disks: map[string]blockAttrs{"nvme0n1": {size: min - 512}, "sda": {size: min}}, want: "/dev/sda"},
		{name: "exact size fits", disks: map[string]blockAttrs{"vda": {size: min}}, want: "/dev/vda"},
		{name: "not disks ignored", disks: map[string]blockAttrs{"loop0": big, "sr0": big, "dm-0": big, "ram0": big, "zram0": big, "md0": big, "mmcblk0": big, "vd": big, "nvme": big, "sd1": big}, wantErr: "no nvme*, vd*, sd* or xvd* disk in"},
		{name: "bad size", disks: map[string]blockAttrs{"vda": {rawSize: "lots"}}, wantErr: `vda: bad size "lots"`},
		{name: "all unfit, each named", disks: map[string]blockAttrs{"vda": {size: MiB}, "sda": {size: 20 * MiB, removable: "1"}}, wantErr: "vda: 1048576 bytes, too small; sda: removable"},
		{name: "empty", disks: nil, wantErr: "no nvme*, vd*, sd* or xvd* disk"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sys := t.TempDir()
			for name, a := range tt.disks {
				makeBlock(t, sys, name, a)
			}
			got, err := PickDisk(sys, min)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("PickDisk = %q, %v; want an error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("PickDisk = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
	if _, err := PickDisk(filepath.Join(t.TempDir(), "missing"), min); err == nil {
		t.Error("PickDisk of a missing directory succeeded")
	}
}

func TestCompareDisks(t *testing.T) {
	for _, tt := range []struct{ a, b string }{
		{"nvme0n1", "vda"}, {"vda", "sda"}, {"sda", "xvda"}, {"sda", "sdb"}, {"sdz", "sdaa"},
		{"nvme1n1", "nvme10n1"}, {"nvme0n1", "nvme0n2"}, {"nvme0n9", "nvme0n10"}, {"vdz", "vdaa"},
	} {
		if c := compareDisks(tt.a, tt.b); c >= 0 {
			t.Errorf("compareDisks(%q, %q) = %d, want < 0", tt.a, tt.b, c)
		}
		if c := compareDisks(tt.b, tt.a); c <= 0 {
			t.Errorf("compareDisks(%q, %q) = %d, want > 0", tt.b, tt.a, c)
		}
	}
}
