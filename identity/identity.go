// Package identity is what kiln tells a machine about itself: only what is
// unique to it. Everything common to many machines belongs in the image.
//
// One Identity is rendered four ways: kiln JSON (JSON), POSIX shell
// assignments (Env), cloud-init NoCloud files (MetaData, UserData,
// NetworkConfig) and kernel command line parameters (Identity.Cmdline).
//
// The package is pure: it validates and renders, and knows nothing of storage
// or HTTP.
package identity

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Identity is a machine's minimal identity. Only Hostname, MAC and Image are
// required; every other field is optional and left out of the JSON when empty.
type Identity struct {
	Hostname string `json:"hostname"`
	// Domain, when set, makes the machine's FQDN Hostname + "." + Domain.
	Domain string `json:"domain,omitempty"`
	// MAC is the MAC the machine boots from.
	MAC string `json:"mac"`
	// MACs are the machine's other NICs.
	MACs []string `json:"macs,omitempty"`
	// IP is the IPv4 address of the machine's DHCP lease, if fixed.
	IP string `json:"ip,omitempty"`
	// Addresses are static addresses in CIDR form (10.0.0.5/24,
	// 2001:db8::5/64) of the boot NIC; empty means the address comes from
	// the DHCP lease.
	Addresses []string `json:"addresses,omitempty"`
	// Gateway is the default gateway of the static addresses.
	Gateway string `json:"gateway,omitempty"`
	// DNS are name server addresses.
	DNS []string `json:"dns,omitempty"`
	// SSHAuthorizedKeys are OpenSSH authorized_keys lines for the default user.
	SSHAuthorizedKeys []string `json:"ssh_authorized_keys,omitempty"`
	// SSHHostKeys are the machine's SSH host keys by type (rsa, ecdsa,
	// ed25519), so that a re-imaged machine keeps its host key.
	SSHHostKeys map[string]SSHKeyPair `json:"ssh_host_keys,omitempty"`
	// Labels are free key/value pairs for the operator.
	Labels map[string]string `json:"labels,omitempty"`
	// MachineID is stable for the machine's lifetime, across generations.
	MachineID string `json:"machine_id,omitempty"`
	// Generation is the machine record's generation this identity belongs to.
	Generation int `json:"generation,omitempty"`
	// Image is the ID of the image the machine is meant to run.
	Image string `json:"image"`
}

// SSHKeyPair is one SSH host key: a PEM/OpenSSH private key and its
// public key line.
type SSHKeyPair struct {
	Private string `json:"private"`
	Public  string `json:"public"`
}

// hostKeyTypes maps the host key types cloud-init's ssh_keys knows to the
// OpenSSH public key algorithms they may carry.
var hostKeyTypes = map[string][]string{
	"rsa":     {"ssh-rsa"},
	"ecdsa":   {"ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521"},
	"ed25519": {"ssh-ed25519"},
}

// authorizedKeyTypes are the OpenSSH public key algorithms accepted in
// SSHAuthorizedKeys.
var authorizedKeyTypes = map[string]bool{
	"ssh-rsa": true, "ssh-ed25519": true, "ssh-dss": true,
	"ecdsa-sha2-nistp256": true, "ecdsa-sha2-nistp384": true, "ecdsa-sha2-nistp521": true,
	"sk-ssh-ed25519@openssh.com": true, "sk-ecdsa-sha2-nistp256@openssh.com": true,
}

// Validate checks every field and returns the first problem, naming the
// field and the value.
func (id Identity) Validate() error {
	if err := ValidateHostname(id.Hostname); err != nil {
		return err
	}
	if strings.Contains(id.Hostname, ".") && id.Domain != "" {
		return fmt.Errorf("hostname %q has a domain part and domain %q is set too: use one", id.Hostname, id.Domain)
	}
	if id.Domain != "" {
		if err := ValidateHostname(id.Domain); err != nil {
			return fmt.Errorf("domain: %w", err)
		}
		if len(id.Hostname)+1+len(id.Domain) > 253 {
			return fmt.Errorf("domain %q: fqdn %s.%s is longer than 253 characters", id.Domain, id.Hostname, id.Domain)
		}
	}
	mac, err := NormalizeMAC(id.MAC)
	if err != nil {
		return err
	}
	seen := map[string]bool{mac: true}
	for i, m := range id.MACs {
		n, err := NormalizeMAC(m)
		if err != nil {
			return fmt.Errorf("macs[%d]: %w", i, err)
		}
		if seen[n] {
			return fmt.Errorf("macs[%d] %q is listed twice", i, m)
		}
		seen[n] = true
	}
	if id.IP != "" && net.ParseIP(id.IP).To4() == nil {
		return fmt.Errorf("ip %q is not an IPv4 address", id.IP)
	}
	var has4, has6 bool
	for i, a := range id.Addresses {
		p, err := netip.ParsePrefix(a)
		if err != nil || p.Addr().Zone() != "" {
			return fmt.Errorf("addresses[%d] %q is not an address in CIDR form (want e.g. 10.0.0.5/24)", i, a)
		}
		if p.Addr() == p.Masked().Addr() && p.Bits() < p.Addr().BitLen()-1 {
			return fmt.Errorf("addresses[%d] %q is a network, not a host address", i, a)
		}
		if p.Addr().Is4() {
			has4 = true
		} else {
			has6 = true
		}
	}
	if id.Gateway != "" {
		gw, err := netip.ParseAddr(id.Gateway)
		if err != nil || gw.Zone() != "" || gw.Is4In6() {
			return fmt.Errorf("gateway %q is not an IP address", id.Gateway)
		}
		if len(id.Addresses) == 0 {
			return fmt.Errorf("gateway %q needs static addresses (without them the gateway comes from the lease)", id.Gateway)
		}
		if gw.Is4() && !has4 || gw.Is6() && !has6 {
			return fmt.Errorf("gateway %q: no static address of its family", id.Gateway)
		}
	}
	for i, d := range id.DNS {
		a, err := netip.ParseAddr(d)
		if err != nil || a.Zone() != "" || a.Is4In6() {
			return fmt.Errorf("dns[%d] %q is not an IP address", i, d)
		}
	}
	for i, k := range id.SSHAuthorizedKeys {
		if err := checkPublicKey(k, nil); err != nil {
			return fmt.Errorf("ssh_authorized_keys[%d]: %w", i, err)
		}
	}
	for _, typ := range slices.Sorted(maps.Keys(id.SSHHostKeys)) {
		kp := id.SSHHostKeys[typ]
		algs, ok := hostKeyTypes[typ]
		if !ok {
			return fmt.Errorf("ssh_host_keys: type %q is not rsa, ecdsa or ed25519", typ)
		}
		if err := checkPublicKey(kp.Public, algs); err != nil {
			return fmt.Errorf("ssh_host_keys[%s].public: %w", typ, err)
		}
		p := strings.TrimSpace(kp.Private)
		if !strings.HasPrefix(p, "-----BEGIN ") || !strings.HasSuffix(p, "PRIVATE KEY-----") || !strings.Contains(p, "\n") {
			return fmt.Errorf("ssh_host_keys[%s].private is not a PEM or OpenSSH private key (-----BEGIN ... PRIVATE KEY-----)", typ)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(id.Labels)) {
		if err := checkLabel(k, id.Labels[k]); err != nil {
			return err
		}
	}
	if id.MachineID != "" {
		if err := checkMachineID(id.MachineID); err != nil {
			return err
		}
	}
	if id.Generation < 0 {
		return fmt.Errorf("generation %d is negative", id.Generation)
	}
	if id.Image == "" {
		return fmt.Errorf("image is empty")
	}
	return nil
}

// checkPublicKey checks an OpenSSH public key line "type base64 [comment]";
// algs, when not nil, restricts the type.
func checkPublicKey(k string, algs []string) error {
	if strings.ContainsAny(k, "\r\n\x00") {
		return fmt.Errorf("key %q spans lines", k)
	}
	f := strings.Fields(k)
	if len(f) < 2 {
		return fmt.Errorf("key %q is not an OpenSSH public key (want \"ssh-ed25519 AAAA... comment\")", k)
	}
	if algs != nil {
		ok := false
		for _, a := range algs {
			ok = ok || f[0] == a
		}
		if !ok {
			return fmt.Errorf("key %q: type %q is not one of %s", k, f[0], strings.Join(algs, ", "))
		}
	} else if !authorizedKeyTypes[f[0]] {
		return fmt.Errorf("key %q: type %q is not an OpenSSH public key type", k, f[0])
	}
	if !strings.HasPrefix(f[1], "AAAA") || strings.Trim(f[1], "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=") != "" {
		return fmt.Errorf("key %q: %q is not base64 key data", k, f[1])
	}
	for _, r := range k {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("key %q has the unprintable character %q", k, r)
		}
	}
	return nil
}

// checkLabel checks a label: the key is 1-63 letters, digits, '.', '_',
// '-' or '/'; the value at most 253 printable characters.
func checkLabel(k, v string) error {
	if k == "" || len(k) > 63 {
		return fmt.Errorf("labels: key %q must be 1-63 characters", k)
	}
	for _, c := range k {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.ContainsRune("._-/", c)) {
			return fmt.Errorf("labels: key %q: %q is not a letter, digit, '.', '_', '-' or '/'", k, c)
		}
	}
	if len(v) > 253 {
		return fmt.Errorf("labels[%s]: value %q is longer than 253 characters", k, v)
	}
	for _, r := range v {
		if !unicode.IsPrint(r) || r == utf8.RuneError {
			return fmt.Errorf("labels[%s]: value %q has the unprintable character %q", k, v, r)
		}
	}
	return nil
}

// checkMachineID checks a machine ID: 1-64 lowercase letters, digits and
// hyphens, so that it is safe in a cloud-init instance-id, a file name and a
// kernel command line.
func checkMachineID(s string) error {
	if len(s) > 64 {
		return fmt.Errorf("machine_id %q is longer than 64 characters", s)
	}
	for _, c := range s {
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return fmt.Errorf("machine_id %q: %q is not a lowercase letter, digit or hyphen", s, c)
		}
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

// NotIdentityError is Decode's error for a key that is not an identity field
// (packages, users, files, runcmd...): it belongs in the image.
type NotIdentityError struct {
	Field string
}

func (e *NotIdentityError) Error() string {
	return fmt.Sprintf("%q is not identity: put it in the image", e.Field)
}

// fields are the JSON names of Identity's fields, the only keys Decode
// accepts.
var fields = map[string]bool{}

func init() {
	for _, f := range []string{"hostname", "domain", "mac", "macs", "ip", "addresses", "gateway", "dns",
		"ssh_authorized_keys", "ssh_host_keys", "labels", "machine_id", "generation", "image"} {
		fields[f] = true
	}
}

// Decode parses kiln JSON strictly and validates the result. A key that is not
// an identity field is refused with an error that says to put it in the image:
// packages, users, files and commands are common to many machines. Field names
// are case-sensitive, unlike encoding/json's. Empty lists and maps decode to nil.
func Decode(data []byte) (Identity, error) {
	id, err := DecodePartial(data)
	if err != nil {
		return Identity{}, err
	}
	if err := id.Validate(); err != nil {
		return Identity{}, fmt.Errorf("invalid identity: %w", err)
	}
	return id, nil
}

// DecodePartial is Decode without the validation of the whole: for the part
// of an identity an operator writes in a file, whose hostname, MAC and image
// come from elsewhere (kiln machines add --identity FILE). Keys that are not
// identity are refused all the same.
func DecodePartial(data []byte) (Identity, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return Identity{}, fmt.Errorf("decoding identity: %w", err)
	}
	for _, k := range slices.Sorted(maps.Keys(raw)) {
		if !fields[k] {
			return Identity{}, fmt.Errorf("decoding identity: %w", &NotIdentityError{Field: k})
		}
	}
	var id Identity
	d := json.NewDecoder(bytes.NewReader(data))
	d.DisallowUnknownFields()
	if err := d.Decode(&id); err != nil {
		return Identity{}, fmt.Errorf("decoding identity: %w", err)
	}
	if len(id.MACs) == 0 {
		id.MACs = nil
	}
	if len(id.Addresses) == 0 {
		id.Addresses = nil
	}
	if len(id.DNS) == 0 {
		id.DNS = nil
	}
	if len(id.SSHAuthorizedKeys) == 0 {
		id.SSHAuthorizedKeys = nil
	}
	if len(id.SSHHostKeys) == 0 {
		id.SSHHostKeys = nil
	}
	if len(id.Labels) == 0 {
		id.Labels = nil
	}
	return id, nil
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

// InstanceID is cloud-init's instance-id: the machine ID and the generation,
// "<machine_id>-g<generation>", so that cloud-init runs its per-instance
// modules again when, and only when, the machine gets a new generation.
func (id Identity) InstanceID() string {
	return id.MachineID + "-g" + strconv.Itoa(id.Generation)
}

// FQDN is Hostname + "." + Domain, or Hostname when Domain is empty.
func (id Identity) FQDN() string {
	if id.Domain == "" {
		return id.Hostname
	}
	return id.Hostname + "." + id.Domain
}

// Cmdline returns the kernel command line parameters that point cloud-init
// and kiln's own initramfs at the machine's identity:
//
//	ds=nocloud-net;s=<baseURL>/   cloud-init fetches <baseURL>/meta-data and /user-data
//	kiln.hostname=<FQDN, or hostname without Domain>
//	kiln.machine_id=<machine ID>
//	kiln.generation=<generation>
//
// cloud-init 22.4 (Debian 12) only follows an http(s) seed for
// "ds=nocloud-net"; later versions accept it too. baseURL must be an
// absolute http or https URL; a trailing slash is added if missing. The
// values are validated to hold no space, quote or ';', so nothing needs
// quoting; a baseURL with such characters is an error.
func (id Identity) Cmdline(baseURL string) (string, error) {
	if err := id.Validate(); err != nil {
		return "", err
	}
	if err := needMachineID(id); err != nil {
		return "", err
	}
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("cmdline: base url %q is not an absolute http(s) URL", baseURL)
	}
	for _, r := range baseURL {
		if r <= ' ' || r >= 0x7f || strings.ContainsRune(`;"'\`, r) {
			return "", fmt.Errorf("cmdline: base url %q has %q, which a kernel command line or cloud-init would split or misread", baseURL, r)
		}
	}
	if !strings.HasSuffix(baseURL, "/") {
		baseURL += "/"
	}
	return fmt.Sprintf("ds=nocloud-net;s=%s kiln.hostname=%s kiln.machine_id=%s kiln.generation=%d",
		baseURL, id.FQDN(), id.MachineID, id.Generation), nil
}

func needMachineID(id Identity) error {
	if id.MachineID == "" {
		return fmt.Errorf("machine_id is empty: cloud-init needs it for its instance-id")
	}
	return nil
}
