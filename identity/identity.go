// Package identity is what kiln tells a machine about itself: only what is
// unique to it. Everything common to many machines belongs in the image.
//
// The package is pure: it validates and renders, and knows nothing of storage
// or HTTP.
package identity

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"
)

// Identity is a machine's minimal identity.
type Identity struct {
	Hostname string `json:"hostname"`
	MAC      string `json:"mac"`
	IP       string `json:"ip,omitempty"`
	// Image is the ID of the image the machine is meant to run.
	Image string `json:"image"`
}

// Validate checks every field.
func (id Identity) Validate() error {
	if err := ValidateHostname(id.Hostname); err != nil {
		return err
	}
	if _, err := NormalizeMAC(id.MAC); err != nil {
		return err
	}
	if id.IP != "" && net.ParseIP(id.IP).To4() == nil {
		return fmt.Errorf("ip %q is not an IPv4 address", id.IP)
	}
	if id.Image == "" {
		return fmt.Errorf("image is empty")
	}
	return nil
}

// ValidateHostname checks that name is a valid host name (RFC 1123, section
// 2.1): dot-separated labels of 1-63 letters, digits and hyphens, not starting
// or ending with a hyphen, 253 characters at most.
func ValidateHostname(name string) error {
	if name == "" {
		return fmt.Errorf("hostname is empty")
	}
	if len(name) > 253 {
		return fmt.Errorf("hostname %q is longer than 253 characters", name)
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("hostname %q: label %q must be 1-63 characters", name, label)
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("hostname %q: label %q starts or ends with a hyphen", name, label)
		}
		for _, c := range label {
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return fmt.Errorf("hostname %q: %q is not a letter, digit or hyphen", name, c)
			}
		}
	}
	return nil
}

// NormalizeMAC parses an Ethernet MAC in any form net.ParseMAC accepts
// (colons, hyphens, dots) and returns it as lowercase colon-separated hex.
func NormalizeMAC(s string) (string, error) {
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return "", fmt.Errorf("mac %q is not an Ethernet MAC address (want e.g. 52:54:00:12:34:56)", s)
	}
	return hw.String(), nil
}

// JSON renders the identity as kiln JSON.
func (id Identity) JSON() ([]byte, error) {
	return json.MarshalIndent(id, "", "  ")
}

// Env renders the identity as POSIX shell assignments, one per line, each
// value single-quoted, so a busybox init can source it without a JSON parser.
func (id Identity) Env() []byte {
	var b strings.Builder
	for _, kv := range [][2]string{
		{"KILN_HOSTNAME", id.Hostname},
		{"KILN_MAC", id.MAC},
		{"KILN_IP", id.IP},
		{"KILN_IMAGE", id.Image},
	} {
		fmt.Fprintf(&b, "%s=%s\n", kv[0], shellQuote(kv[1]))
	}
	return []byte(b.String())
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Cmdline returns the kernel command line parameters that point a booting
// machine at its identity and its phone-home endpoint.
func Cmdline(identityURL, phoneHomeURL string, image string) string {
	return fmt.Sprintf("kiln.identity=%s kiln.phonehome=%s kiln.image=%s", identityURL, phoneHomeURL, image)
}
