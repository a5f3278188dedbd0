package identity

import (
	"os/exec"
	"strings"
	"testing"
)

func TestValidateHostname(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"node-1", true},
		{"rack1-node07.dc1.example", true},
		{"", false},
		{"-node", false},
		{"node-", false},
		{"no_de", false},
		{"a..b", false},
		{strings.Repeat("a", 64), false},
		{strings.Repeat("a.", 127) + "ab", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateHostname(tc.name)
			if (err == nil) != tc.ok {
				t.Fatalf("ValidateHostname(%q) = %v, want ok=%v", tc.name, err, tc.ok)
			}
		})
	}
}

func TestNormalizeMAC(t *testing.T) {
	for in, want := range map[string]string{
		"52:54:00:AB:CD:EF": "52:54:00:ab:cd:ef",
		"52-54-00-ab-cd-ef": "52:54:00:ab:cd:ef",
		"5254.00ab.cdef":    "52:54:00:ab:cd:ef",
	} {
		got, err := NormalizeMAC(in)
		if err != nil || got != want {
			t.Errorf("NormalizeMAC(%q) = %q, %v, want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "52:54:00", "zz:54:00:ab:cd:ef", "00:00:00:00:fe:80:00:00:00:00:00:00:00:00:00:00:00:00:00:00"} {
		if _, err := NormalizeMAC(bad); err == nil {
			t.Errorf("NormalizeMAC(%q) succeeded, want error", bad)
		}
	}
}

func TestValidate(t *testing.T) {
	good := Identity{Hostname: "n1", MAC: "52:54:00:00:00:01", IP: "10.0.0.5", Image: "sha256:x"}
	if err := good.Validate(); err != nil {
		t.Fatalf("Validate(%+v) = %v", good, err)
	}
	bad := good
	bad.IP = "fe80::1"
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "ip") {
		t.Fatalf("Validate with IPv6 ip = %v, want error naming ip", err)
	}
}

// TestEnvIsSafeShell sources the rendered identity in a real shell, with a
// hostile hostname-like value, and checks that every value comes back intact.
func TestEnvIsSafeShell(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh on PATH")
	}
	id := Identity{Hostname: "n1", MAC: "52:54:00:00:00:01", IP: "10.0.0.5", Image: "it's $(touch /tmp/pwned) `x`"}
	script := string(id.Env()) + `printf '%s|%s|%s|%s' "$KILN_HOSTNAME" "$KILN_MAC" "$KILN_IP" "$KILN_IMAGE"`
	out, err := exec.Command(sh, "-c", script).Output()
	if err != nil {
		t.Fatalf("sourcing Env(): %v", err)
	}
	want := strings.Join([]string{id.Hostname, id.MAC, id.IP, id.Image}, "|")
	if string(out) != want {
		t.Fatalf("sourced Env() = %q, want %q", out, want)
	}
}
