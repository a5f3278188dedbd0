package installer

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path"
	"strings"
)

// Cmdline is what the installer reads from the kernel command line.
type Cmdline struct {
	// InstallURL is kiln.install=URL: where the plan is.
	InstallURL string
	// Disk is kiln.disk=/dev/NAME, overriding PickDisk; "" if absent.
	Disk string
}

// ParseCmdline parses /proc/cmdline. Words are split on spaces and tabs
// except inside double quotes, as the kernel does; the last of a repeated
// parameter wins. kiln.install must be an http(s) URL; kiln.disk, if
// given, a path under /dev/.
func ParseCmdline(s string) (Cmdline, error) {
	var c Cmdline
	for _, word := range splitCmdline(s) {
		key, val, _ := strings.Cut(word, "=")
		val = strings.Trim(val, `"`)
		switch key {
		case "kiln.install":
			c.InstallURL = val
		case "kiln.disk":
			c.Disk = val
		}
	}
	if c.InstallURL == "" {
		return Cmdline{}, errors.New("kernel command line: no kiln.install=URL")
	}
	if err := checkURL(c.InstallURL); err != nil {
		return Cmdline{}, fmt.Errorf("kernel command line: kiln.install: %v", err)
	}
	if c.Disk != "" && (!strings.HasPrefix(c.Disk, "/dev/") || path.Clean(c.Disk) != c.Disk) {
		return Cmdline{}, fmt.Errorf("kernel command line: kiln.disk=%q is not a /dev/ path", c.Disk)
	}
	return c, nil
}

// splitCmdline splits on blanks outside double quotes.
func splitCmdline(s string) []string {
	var words []string
	var cur strings.Builder
	quoted := false
	for _, r := range s {
		switch {
		case r == '"':
			quoted = !quoted
			cur.WriteRune(r)
		case !quoted && (r == ' ' || r == '\t' || r == '\n'):
			if cur.Len() > 0 {
				words = append(words, cur.String())
				cur.Reset()
			}
		default:
			cur.WriteRune(r)
		}
	}
	if cur.Len() > 0 {
		words = append(words, cur.String())
	}
	return words
}

// InstallMAC returns the MAC address that ends the path of an install URL
// (<base>/install/<MAC>?token=...), or nil. The installer tries the NIC
// with that address first.
func InstallMAC(installURL string) net.HardwareAddr {
	u, err := url.Parse(installURL)
	if err != nil {
		return nil
	}
	hw, err := net.ParseMAC(path.Base(u.Path))
	if err != nil {
		return nil
	}
	return hw
}
