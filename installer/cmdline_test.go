package installer

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseCmdline(t *testing.T) {
	const u = "http://10.77.0.1:8080/install/52:54:00:12:34:56?token=Ab-_9"
	tests := []struct {
		name, in string
		want     Cmdline
		wantErr  string
	}{
		{"plain", "console=ttyS0 quiet kiln.install=" + u + "\n", Cmdline{InstallURL: u}, ""},
		{"with disk", "kiln.disk=/dev/nvme0n1 kiln.install=" + u, Cmdline{InstallURL: u, Disk: "/dev/nvme0n1"}, ""},
		{"quoted", `root=x kiln.install="` + u + `"	ro`, Cmdline{InstallURL: u}, ""},
		{"quoted value with space", `foo="a b" kiln.install=` + u, Cmdline{InstallURL: u}, ""},
		{"last wins", "kiln.install=http://old/ kiln.install=" + u, Cmdline{InstallURL: u}, ""},
		{"missing", "console=ttyS0 kiln.hostname=x", Cmdline{}, "no kiln.install=URL"},
		{"empty value", "kiln.install=", Cmdline{}, "no kiln.install=URL"},
		{"not http", "kiln.install=tftp://x/y", Cmdline{}, "scheme must be http or https"},
		{"disk not in /dev", "kiln.install=" + u + " kiln.disk=vda", Cmdline{}, `kiln.disk="vda" is not a /dev/ path`},
		{"disk escaping /dev", "kiln.install=" + u + " kiln.disk=/dev/../etc/x", Cmdline{}, "is not a /dev/ path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCmdline(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseCmdline(%q) = %v, want error %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseCmdline(%q) = %v", tt.in, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseCmdline(%q) (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func TestInstallMAC(t *testing.T) {
	for in, want := range map[string]string{
		"http://k/install/52:54:00:12:34:56?token=x":       "52:54:00:12:34:56",
		"http://k/install/52%3A54%3A00%3A12%3A34%3A56":     "52:54:00:12:34:56",
		"http://k/install/52-54-00-AB-34-56#frag":          "52:54:00:ab:34:56",
		"http://k/install/notamac?token=52:54:00:12:34:56": "",
		"::": "",
	} {
		got := InstallMAC(in)
		if s := got.String(); s != want {
			t.Errorf("InstallMAC(%q) = %q, want %q", in, s, want)
		}
	}
}
