// Command capture extracts the client request payloads of DHCPv4, DHCPv6 and
// TFTP from pcap files recorded during the e2e boots (see e2e/capture.sh)
// into seed files for the fuzzers: OUT/{dhcp4,dhcp6,tftp}/NAME.bin, each the
// raw UDP payload of one packet.
//
// Usage:
//
//	go run ./e2e/capture -out testdata/captures FILE.pcap...
//
// A seed is named after what the packet is (client kind and architecture,
// message type, relayed, option 82, port; for TFTP the file and options), so
// a retransmission or another boot of the same kind adds nothing: the first
// packet of each name is kept, in the order of the files given. Each pcap's
// base name (without .pcap) labels the seeds taken from it in the listing
// printed on stdout.
package main

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv6"
)

func main() {
	out := flag.String("out", "testdata/captures", "folder of the seed files")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: capture -out DIR FILE.pcap...")
		os.Exit(2)
	}
	seeds := map[string][]byte{}
	from := map[string]string{}
	for _, path := range flag.Args() {
		label := strings.TrimSuffix(filepath.Base(path), ".pcap")
		pkts, err := readPcap(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, "capture:", err)
			os.Exit(1)
		}
		for _, p := range pkts {
			name, ok := classify(p)
			if !ok {
				continue
			}
			if _, dup := seeds[name]; !dup {
				seeds[name], from[name] = p.payload, label
			}
		}
	}
	names := make([]string, 0, len(seeds))
	for name := range seeds {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		path := filepath.Join(*out, name+".bin")
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			fmt.Fprintln(os.Stderr, "capture:", err)
			os.Exit(1)
		}
		if err := os.WriteFile(path, seeds[name], 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "capture:", err)
			os.Exit(1)
		}
		fmt.Printf("%-60s %4d bytes, from %s\n", path, len(seeds[name]), from[name])
	}
}

// udpPacket is one captured UDP datagram.
type udpPacket struct {
	srcPort, dstPort uint16
	payload          []byte
}

// Link types of the pcap header that readPcap understands.
const (
	linkEthernet = 1
	linkLinuxSLL = 113
)

// readPcap returns the UDP datagrams (IPv4 or IPv6) of a classic pcap file.
func readPcap(path string) ([]udpPacket, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var hdr [24]byte
	if _, err := io.ReadFull(f, hdr[:]); err != nil {
		return nil, fmt.Errorf("reading pcap header of %s: %w", path, err)
	}
	var bo binary.ByteOrder
	switch binary.LittleEndian.Uint32(hdr[:4]) {
	case 0xa1b2c3d4, 0xa1b23c4d:
		bo = binary.LittleEndian
	case 0xd4c3b2a1, 0x4d3cb2a1:
		bo = binary.BigEndian
	default:
		return nil, fmt.Errorf("reading %s: not a pcap file (pcapng is not supported)", path)
	}
	link := bo.Uint32(hdr[20:24])
	if link != linkEthernet && link != linkLinuxSLL {
		return nil, fmt.Errorf("reading %s: link type %d, want Ethernet (1) or Linux SLL (113)", path, link)
	}
	var pkts []udpPacket
	for {
		var rec [16]byte
		if _, err := io.ReadFull(f, rec[:]); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return pkts, nil // a capture cut short still has its whole packets
			}
			return nil, fmt.Errorf("reading %s: %w", path, err)
		}
		frame := make([]byte, bo.Uint32(rec[8:12]))
		if _, err := io.ReadFull(f, frame); err != nil {
			return pkts, nil
		}
		if p, ok := parseFrame(link, frame); ok {
			pkts = append(pkts, p)
		}
	}
}

// parseFrame finds the UDP datagram in a link-layer frame.
func parseFrame(link uint32, b []byte) (udpPacket, bool) {
	var etherType uint16
	switch link {
	case linkEthernet:
		if len(b) < 14 {
			return udpPacket{}, false
		}
		etherType, b = binary.BigEndian.Uint16(b[12:14]), b[14:]
		if etherType == 0x8100 && len(b) >= 4 { // one VLAN tag
			etherType, b = binary.BigEndian.Uint16(b[2:4]), b[4:]
		}
	case linkLinuxSLL:
		if len(b) < 16 {
			return udpPacket{}, false
		}
		etherType, b = binary.BigEndian.Uint16(b[14:16]), b[16:]
	}
	var udp []byte
	switch etherType {
	case 0x0800:
		if len(b) < 20 || b[0]>>4 != 4 || b[9] != 17 {
			return udpPacket{}, false
		}
		ihl := int(b[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(b[2:4]))
		if ihl < 20 || total < ihl || total > len(b) {
			return udpPacket{}, false
		}
		udp = b[ihl:total]
	case 0x86dd:
		if len(b) < 40 || b[6] != 17 { // no extension headers on these paths
			return udpPacket{}, false
		}
		n := int(binary.BigEndian.Uint16(b[4:6]))
		if 40+n > len(b) {
			return udpPacket{}, false
		}
		udp = b[40 : 40+n]
	default:
		return udpPacket{}, false
	}
	if len(udp) < 8 {
		return udpPacket{}, false
	}
	n := int(binary.BigEndian.Uint16(udp[4:6]))
	if n < 8 || n > len(udp) {
		return udpPacket{}, false
	}
	return udpPacket{
		srcPort: binary.BigEndian.Uint16(udp[0:2]),
		dstPort: binary.BigEndian.Uint16(udp[2:4]),
		payload: append([]byte(nil), udp[8:n]...),
	}, true
}

var unsafeChars = regexp.MustCompile(`[^a-z0-9.]+`)

// slug makes s safe and short for a file name.
func slug(s string) string {
	return strings.Trim(unsafeChars.ReplaceAllString(strings.ToLower(s), "-"), "-")
}

// classify names a client request after what it is, or says it is not one.
func classify(p udpPacket) (string, bool) {
	switch {
	case p.dstPort == 67 || p.dstPort == 4011:
		m, err := dhcpv4.FromBytes(p.payload)
		if err != nil || m.OpCode != dhcpv4.OpcodeBootRequest {
			return "", false
		}
		parts := []string{clientKind(m), slug(m.MessageType().String())}
		if !m.GatewayIPAddr.IsUnspecified() {
			parts = append(parts, "relayed")
		}
		if m.RelayAgentInfo() != nil {
			parts = append(parts, "opt82")
		}
		if p.dstPort == 4011 {
			parts = append(parts, "port4011")
		}
		return "dhcp4/" + strings.Join(parts, "-"), true
	case p.dstPort == 547:
		m, err := dhcpv6.FromBytes(p.payload)
		if err != nil {
			return "", false
		}
		return "dhcp6/" + slug(m.Type().String()), true
	case p.dstPort == 69:
		b := p.payload
		if len(b) < 4 || binary.BigEndian.Uint16(b) != 1 { // RRQ only
			return "", false
		}
		fields := strings.Split(strings.TrimSuffix(string(b[2:]), "\x00"), "\x00")
		if len(fields) < 2 {
			return "", false
		}
		parts := []string{"rrq", slug(filepath.Base(fields[0]))}
		for i := 2; i+1 < len(fields); i += 2 {
			parts = append(parts, slug(fields[i]))
		}
		return "tftp/" + strings.Join(parts, "-"), true
	}
	return "", false
}

// clientKind says which firmware sent a DHCPv4 request: iPXE (user class),
// a PXE or HTTP Boot client (option 60 with its architecture) or another.
func clientKind(m *dhcpv4.DHCPv4) string {
	for _, uc := range m.UserClass() {
		if uc == "iPXE" {
			if archs := m.ClientArch(); len(archs) > 0 {
				return fmt.Sprintf("ipxe-arch%d", uint16(archs[0]))
			}
			return "ipxe"
		}
	}
	class := m.ClassIdentifier()
	kind, rest, _ := strings.Cut(class, ":")
	switch kind {
	case "PXEClient", "HTTPClient":
		arch := "x"
		if f := strings.Split(rest, ":"); len(f) >= 2 && f[0] == "Arch" {
			arch = strings.TrimLeft(f[1], "0")
			if arch == "" {
				arch = "0"
			}
		}
		return slug(kind) + "-arch" + arch
	case "":
		return "noclass"
	}
	return slug(kind)
}
