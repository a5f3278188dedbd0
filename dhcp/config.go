package dhcp

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// File is the content of a DHCP configuration file (kiln serve
// --dhcp-config): the subnets and reservations of a Config.
//
//	subnets:
//	  - subnet: 10.78.0.0/24
//	    pools: [10.78.0.100-10.78.0.199]
//	    router: 10.78.0.1
//	    dns: [10.78.0.1]
//	    domain: rack1.example
//	    lease_time: 1h
//	    offer_time: 1m
//	reservations:
//	  - {mac: "52:54:00:77:00:10", ip: 10.78.0.50, hostname: rack1-node10}
type File struct {
	Subnets      []Subnet
	Reservations []Reservation
}

// field names one configuration value for error messages: list is
// "subnets" or "reservations", i the entry, name the key ("" for the entry
// itself) and j the index in a list value, or -1.
type field struct {
	list string
	i    int
	name string
	j    int
}

// locator turns a field into the prefix of an error message.
type locator func(field) string

// goNames maps the file's keys to Config's field names.
var goNames = map[string]string{
	"subnets": "Subnets", "reservations": "Reservations", "subnet": "Prefix", "pools": "Pools",
	"router": "Router", "dns": "DNS", "domain": "Domain", "lease_time": "LeaseTime",
	"offer_time": "OfferTime", "mac": "MAC", "ip": "IP", "hostname": "Hostname",
}

// goPath names a field as Go code does, e.g. "Subnets[0].Pools[1]".
func goPath(f field) string {
	s := fmt.Sprintf("%s[%d]", goNames[f.list], f.i)
	if f.name != "" {
		s += "." + goNames[f.name]
	}
	if f.j >= 0 {
		s += fmt.Sprintf("[%d]", f.j)
	}
	return s
}

// yamlPath names a field as the file does, e.g. "subnets[0].pools[1]".
func yamlPath(f field) string {
	s := fmt.Sprintf("%s[%d]", f.list, f.i)
	if f.name != "" {
		s += "." + f.name
	}
	if f.j >= 0 {
		s += fmt.Sprintf("[%d]", f.j)
	}
	return s
}

// validate checks subnets and reservations: IPv4 subnets without host bits
// that do not overlap, pools inside their subnet (not its network or
// broadcast address) that do not overlap, IPv4 router and DNS addresses,
// DNS-style names, and reservations with 6-byte MACs and addresses inside a
// subnet, each MAC and address once.
func validate(subnets []Subnet, res []Reservation, loc locator) error {
	bad := func(f field, value any, format string, args ...any) error {
		return fmt.Errorf("%s %v: %s", loc(f), value, fmt.Sprintf(format, args...))
	}
	for i, sn := range subnets {
		f := field{"subnets", i, "subnet", -1}
		p := sn.Prefix
		switch {
		case !p.IsValid() || !p.Addr().Is4():
			return bad(f, p, "not an IPv4 subnet")
		case p != p.Masked():
			return bad(f, p, "host bits set (want %s)", p.Masked())
		}
		for k, other := range subnets[:i] {
			if other.Prefix.Overlaps(p) {
				return bad(f, p, "overlaps subnets[%d] %s", k, other.Prefix)
			}
		}
		for j, pool := range sn.Pools {
			f := field{"subnets", i, "pools", j}
			switch {
			case !pool.Start.Is4() || !pool.End.Is4():
				return bad(f, pool, "not an IPv4 range")
			case !p.Contains(pool.Start) || !p.Contains(pool.End):
				return bad(f, pool, "outside subnet %s", p)
			case pool.End.Less(pool.Start):
				return bad(f, pool, "end is before start")
			case p.Bits() < 31 && (pool.Contains(p.Addr()) || pool.Contains(lastAddr(p))):
				return bad(f, pool, "contains the network or broadcast address of %s", p)
			}
			for k, q := range sn.Pools[:j] {
				if pool.Contains(q.Start) || q.Contains(pool.Start) {
					return bad(f, pool, "overlaps pools[%d] %s", k, q)
				}
			}
		}
		if sn.Router.IsValid() && (!sn.Router.Is4() || sn.Router.IsUnspecified()) {
			return bad(field{"subnets", i, "router", -1}, sn.Router, "not an IPv4 address")
		}
		for j, a := range sn.DNS {
			if !a.Is4() || a.IsUnspecified() {
				return bad(field{"subnets", i, "dns", j}, a, "not an IPv4 address")
			}
		}
		if sn.Domain != "" && !dnsName(sn.Domain) {
			return bad(field{"subnets", i, "domain", -1}, fmt.Sprintf("%q", sn.Domain), "not a DNS name")
		}
		for _, d := range []struct {
			name string
			v    time.Duration
		}{{"lease_time", sn.LeaseTime}, {"offer_time", sn.OfferTime}} {
			if d.v != 0 && (d.v < time.Second || d.v > time.Duration(1<<32-1)*time.Second) {
				return bad(field{"subnets", i, d.name, -1}, d.v, "out of range (1s to 2^32-1 s)")
			}
		}
	}
	macs := map[string]int{}
	ips := map[netip.Addr]int{}
	for i, r := range res {
		if len(r.MAC) != 6 {
			return bad(field{"reservations", i, "mac", -1}, fmt.Sprintf("%q", r.MAC.String()), "not a 6-byte MAC")
		}
		if k, dup := macs[r.MAC.String()]; dup {
			return bad(field{"reservations", i, "mac", -1}, r.MAC, "also reserved by reservations[%d]", k)
		}
		macs[r.MAC.String()] = i
		f := field{"reservations", i, "ip", -1}
		if !r.IP.Is4() || r.IP.IsUnspecified() {
			return bad(f, r.IP, "not an IPv4 address")
		}
		if k, dup := ips[r.IP]; dup {
			return bad(f, r.IP, "also reserved by reservations[%d]", k)
		}
		ips[r.IP] = i
		var in *Subnet
		for k := range subnets {
			if subnets[k].Prefix.Contains(r.IP) {
				in = &subnets[k]
			}
		}
		switch {
		case in == nil:
			return bad(f, r.IP, "outside all subnets")
		case in.Prefix.Bits() < 31 && (r.IP == in.Prefix.Addr() || r.IP == lastAddr(in.Prefix)):
			return bad(f, r.IP, "network or broadcast address of %s", in.Prefix)
		}
		if r.Hostname != "" && !dnsName(r.Hostname) {
			return bad(field{"reservations", i, "hostname", -1}, fmt.Sprintf("%q", r.Hostname), "not a DNS name")
		}
	}
	return nil
}

// dnsName reports whether s is a plausible host or domain name: at most 253
// bytes of letters, digits, '-', '_' and '.'.
func dnsName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, c := range []byte(s) {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.'
		if !ok {
			return false
		}
	}
	return true
}

// The file's YAML shape. Values are kept as nodes for their line numbers.
type yamlFile struct {
	Subnets      []yamlSubnet      `yaml:"subnets"`
	Reservations []yamlReservation `yaml:"reservations"`
}

type yamlSubnet struct {
	Subnet    yaml.Node   `yaml:"subnet"`
	Pools     []yaml.Node `yaml:"pools"`
	Router    yaml.Node   `yaml:"router"`
	DNS       []yaml.Node `yaml:"dns"`
	Domain    yaml.Node   `yaml:"domain"`
	LeaseTime yaml.Node   `yaml:"lease_time"`
	OfferTime yaml.Node   `yaml:"offer_time"`
}

type yamlReservation struct {
	MAC      yaml.Node `yaml:"mac"`
	IP       yaml.Node `yaml:"ip"`
	Hostname yaml.Node `yaml:"hostname"`
}

// ParseConfigFile parses a DHCP configuration file (see File). It is strict:
// an unknown key, a malformed value, overlapping subnets, a pool outside its
// subnet or overlapping another, a MAC or address reserved twice, or a
// reservation outside all subnets is an error naming the line, the field and
// the value.
func ParseConfigFile(data []byte) (File, error) {
	var y yamlFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&y); err != nil && !errors.Is(err, io.EOF) {
		return File{}, fmt.Errorf("dhcp config: %s", yamlError(err))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return File{}, errors.New("dhcp config: more than one YAML document")
	}
	lines := map[field]int{}
	var f File
	for i, ys := range y.Subnets {
		var sn Subnet
		sp := &scalarParser{lines: lines}
		sp.prefix(&sn.Prefix, field{"subnets", i, "subnet", -1}, ys.Subnet, true)
		for j, n := range ys.Pools {
			var p Pool
			sp.pool(&p, field{"subnets", i, "pools", j}, n)
			sn.Pools = append(sn.Pools, p)
		}
		sp.addr(&sn.Router, field{"subnets", i, "router", -1}, ys.Router, false)
		for j, n := range ys.DNS {
			var a netip.Addr
			sp.addr(&a, field{"subnets", i, "dns", j}, n, true)
			sn.DNS = append(sn.DNS, a)
		}
		sp.str(&sn.Domain, field{"subnets", i, "domain", -1}, ys.Domain)
		sp.duration(&sn.LeaseTime, field{"subnets", i, "lease_time", -1}, ys.LeaseTime)
		sp.duration(&sn.OfferTime, field{"subnets", i, "offer_time", -1}, ys.OfferTime)
		if sp.err != nil {
			return File{}, sp.err
		}
		f.Subnets = append(f.Subnets, sn)
	}
	for i, yr := range y.Reservations {
		var r Reservation
		sp := &scalarParser{lines: lines}
		sp.mac(&r.MAC, field{"reservations", i, "mac", -1}, yr.MAC)
		sp.addr(&r.IP, field{"reservations", i, "ip", -1}, yr.IP, true)
		sp.str(&r.Hostname, field{"reservations", i, "hostname", -1}, yr.Hostname)
		if sp.err != nil {
			return File{}, sp.err
		}
		f.Reservations = append(f.Reservations, r)
	}
	loc := func(fl field) string {
		line, ok := lines[fl]
		if !ok {
			line = lines[field{fl.list, fl.i, fl.name, -1}]
		}
		return fmt.Sprintf("line %d: %s", line, yamlPath(fl))
	}
	if err := validate(f.Subnets, f.Reservations, loc); err != nil {
		return File{}, fmt.Errorf("dhcp config: %w", err)
	}
	return f, nil
}

// scalarParser parses the scalar nodes of one entry; the first error sticks.
type scalarParser struct {
	lines map[field]int
	err   error
}

// text returns the scalar's value, or ok=false if the key is absent (or an
// error is already recorded). required makes absence an error.
func (p *scalarParser) text(f field, n yaml.Node, required bool) (string, bool) {
	if p.err != nil {
		return "", false
	}
	if n.Kind == 0 || (n.Kind == yaml.ScalarNode && n.Tag == "!!null") {
		if required && n.Line > 0 {
			p.err = fmt.Errorf("dhcp config: line %d: %s is required", n.Line, yamlPath(f))
		} else if required {
			p.err = fmt.Errorf("dhcp config: %s is required", yamlPath(f))
		}
		return "", false
	}
	p.lines[f] = n.Line
	if n.Kind != yaml.ScalarNode {
		p.err = fmt.Errorf("dhcp config: line %d: %s: want a single value", n.Line, yamlPath(f))
		return "", false
	}
	return n.Value, true
}

func (p *scalarParser) fail(f field, n yaml.Node, format string, args ...any) {
	p.err = fmt.Errorf("dhcp config: line %d: %s %q: %s", n.Line, yamlPath(f), n.Value, fmt.Sprintf(format, args...))
}

func (p *scalarParser) prefix(dst *netip.Prefix, f field, n yaml.Node, required bool) {
	v, ok := p.text(f, n, required)
	if !ok {
		return
	}
	pr, err := netip.ParsePrefix(v)
	if err != nil || !pr.Addr().Is4() {
		p.fail(f, n, "not an IPv4 subnet (want e.g. 10.78.0.0/24)")
		return
	}
	*dst = pr
}

func (p *scalarParser) addr(dst *netip.Addr, f field, n yaml.Node, required bool) {
	v, ok := p.text(f, n, required)
	if !ok {
		return
	}
	a, err := netip.ParseAddr(v)
	if err != nil || !a.Is4() {
		p.fail(f, n, "not an IPv4 address")
		return
	}
	*dst = a
}

func (p *scalarParser) pool(dst *Pool, f field, n yaml.Node) {
	v, ok := p.text(f, n, true)
	if !ok {
		return
	}
	a, b, found := strings.Cut(v, "-")
	start, err1 := netip.ParseAddr(strings.TrimSpace(a))
	end, err2 := netip.ParseAddr(strings.TrimSpace(b))
	if !found || err1 != nil || err2 != nil || !start.Is4() || !end.Is4() {
		p.fail(f, n, "want FIRST-LAST IPv4 addresses")
		return
	}
	*dst = Pool{start, end}
}

func (p *scalarParser) mac(dst *net.HardwareAddr, f field, n yaml.Node) {
	v, ok := p.text(f, n, true)
	if !ok {
		return
	}
	m, err := net.ParseMAC(v)
	if err != nil || len(m) != 6 {
		p.fail(f, n, "not a 6-byte MAC (want e.g. 52:54:00:12:34:56)")
		return
	}
	*dst = m
}

func (p *scalarParser) str(dst *string, f field, n yaml.Node) {
	if v, ok := p.text(f, n, false); ok {
		*dst = v
	}
}

func (p *scalarParser) duration(dst *time.Duration, f field, n yaml.Node) {
	v, ok := p.text(f, n, false)
	if !ok {
		return
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		p.fail(f, n, "not a duration (want e.g. 1h or 90s)")
		return
	}
	*dst = d
}

// outFile is the YAML that Marshal writes.
type outFile struct {
	Subnets      []outSubnet      `yaml:"subnets,omitempty"`
	Reservations []outReservation `yaml:"reservations,omitempty"`
}

type outSubnet struct {
	Subnet    string   `yaml:"subnet"`
	Pools     []string `yaml:"pools,omitempty,flow"`
	Router    string   `yaml:"router,omitempty"`
	DNS       []string `yaml:"dns,omitempty,flow"`
	Domain    string   `yaml:"domain,omitempty"`
	LeaseTime string   `yaml:"lease_time,omitempty"`
	OfferTime string   `yaml:"offer_time,omitempty"`
}

type outReservation struct {
	MAC      string `yaml:"mac"`
	IP       string `yaml:"ip"`
	Hostname string `yaml:"hostname,omitempty"`
}

// Marshal writes f in the format ParseConfigFile reads.
func (f File) Marshal() ([]byte, error) {
	var out outFile
	for _, sn := range f.Subnets {
		o := outSubnet{Subnet: sn.Prefix.String(), Domain: sn.Domain}
		for _, p := range sn.Pools {
			o.Pools = append(o.Pools, p.String())
		}
		if sn.Router.IsValid() {
			o.Router = sn.Router.String()
		}
		for _, a := range sn.DNS {
			o.DNS = append(o.DNS, a.String())
		}
		if sn.LeaseTime != 0 {
			o.LeaseTime = sn.LeaseTime.String()
		}
		if sn.OfferTime != 0 {
			o.OfferTime = sn.OfferTime.String()
		}
		out.Subnets = append(out.Subnets, o)
	}
	for _, r := range f.Reservations {
		out.Reservations = append(out.Reservations, outReservation{MAC: r.MAC.String(), IP: r.IP.String(), Hostname: r.Hostname})
	}
	b, err := yaml.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("encoding dhcp config: %w", err)
	}
	return b, nil
}

// unknownField matches yaml.v3's text for an unknown key, which names our
// internal type: "field pool not found in type dhcp.yamlSubnet".
var unknownField = regexp.MustCompile(`field (\S+) not found in type \S+`)

// yamlError rewrites a yaml.v3 decoding error for an operator: without the
// "yaml: " prefix and the names of kiln's internal types.
func yamlError(err error) string {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	msg = strings.Replace(msg, "unmarshal errors:\n  ", "", 1)
	return unknownField.ReplaceAllString(msg, "unknown field $1")
}
