package identity

import (
	"bytes"
	"fmt"
	"net/netip"

	"go.yaml.in/yaml/v3"
)

// The cloud-init NoCloud renderings: kiln serves them as
// <base>/meta-data, <base>/user-data and <base>/network-config.

// metaData is NoCloud's meta-data.
type metaData struct {
	InstanceID    string `yaml:"instance-id"`
	LocalHostname string `yaml:"local-hostname"`
}

// MetaData renders NoCloud meta-data: instance-id (InstanceID) and
// local-hostname. It needs a valid identity with a MachineID.
func (id Identity) MetaData() ([]byte, error) {
	if err := renderable(id); err != nil {
		return nil, err
	}
	return marshalYAML("", metaData{InstanceID: id.InstanceID(), LocalHostname: id.Hostname})
}

// cloudConfig is the part of #cloud-config kiln writes.
type cloudConfig struct {
	Hostname          string            `yaml:"hostname"`
	FQDN              string            `yaml:"fqdn,omitempty"`
	SSHAuthorizedKeys []string          `yaml:"ssh_authorized_keys,omitempty"`
	SSHKeys           map[string]string `yaml:"ssh_keys,omitempty"`
}

// UserData renders NoCloud user-data: a #cloud-config with hostname, fqdn
// (when Domain is set), ssh_authorized_keys and ssh_keys (the host keys, as
// <type>_private and <type>_public). Nothing else: the rest is the image's.
func (id Identity) UserData() ([]byte, error) {
	if err := renderable(id); err != nil {
		return nil, err
	}
	cc := cloudConfig{Hostname: id.Hostname, SSHAuthorizedKeys: id.SSHAuthorizedKeys}
	if id.Domain != "" {
		cc.FQDN = id.FQDN()
	}
	if len(id.SSHHostKeys) > 0 {
		cc.SSHKeys = map[string]string{}
		for typ, kp := range id.SSHHostKeys {
			cc.SSHKeys[typ+"_private"] = kp.Private
			cc.SSHKeys[typ+"_public"] = kp.Public
		}
	}
	return marshalYAML("#cloud-config\n", cc)
}

// networkConfig is netplan-style network-config version 2.
type networkConfig struct {
	Version   int                 `yaml:"version"`
	Ethernets map[string]ethernet `yaml:"ethernets"`
}

type ethernet struct {
	Match       match        `yaml:"match"`
	SetName     string       `yaml:"set-name"`
	DHCP4       bool         `yaml:"dhcp4"`
	Addresses   []string     `yaml:"addresses,omitempty"`
	Gateway4    string       `yaml:"gateway4,omitempty"`
	Gateway6    string       `yaml:"gateway6,omitempty"`
	Nameservers *nameservers `yaml:"nameservers,omitempty"`
	Optional    bool         `yaml:"optional,omitempty"`
}

type match struct {
	MACAddress string `yaml:"macaddress"`
}

type nameservers struct {
	Addresses []string `yaml:"addresses,omitempty"`
	Search    []string `yaml:"search,omitempty"`
}

// NetworkConfig renders NoCloud network-config version 2. The boot NIC
// (MAC) is matched by its MAC and named "nic0" (set-name: Debian's
// cloud-init renders ENI or networkd files that name the interface, so
// without a rename they would not apply): with Addresses it gets them, gateway4
// or gateway6 and the DNS name servers (search domain: Domain); without, dhcp4.
// Each of MACs is "nic1", "nic2"... with dhcp4 and optional (boot does not
// wait for it).
func (id Identity) NetworkConfig() ([]byte, error) {
	if err := renderable(id); err != nil {
		return nil, err
	}
	mac, _ := NormalizeMAC(id.MAC)
	boot := ethernet{Match: match{MACAddress: mac}, SetName: "nic0", DHCP4: len(id.Addresses) == 0, Addresses: id.Addresses}
	if id.Gateway != "" {
		if netip.MustParseAddr(id.Gateway).Is4() {
			boot.Gateway4 = id.Gateway
		} else {
			boot.Gateway6 = id.Gateway
		}
	}
	if len(id.DNS) > 0 || id.Domain != "" {
		boot.Nameservers = &nameservers{Addresses: id.DNS}
		if id.Domain != "" {
			boot.Nameservers.Search = []string{id.Domain}
		}
	}
	nc := networkConfig{Version: 2, Ethernets: map[string]ethernet{"nic0": boot}}
	for i, m := range id.MACs {
		n, _ := NormalizeMAC(m)
		name := fmt.Sprintf("nic%d", i+1)
		nc.Ethernets[name] = ethernet{Match: match{MACAddress: n}, SetName: name, DHCP4: true, Optional: true}
	}
	return marshalYAML("", nc)
}

func renderable(id Identity) error {
	if err := id.Validate(); err != nil {
		return err
	}
	return needMachineID(id)
}

func marshalYAML(header string, v any) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(header)
	e := yaml.NewEncoder(&b)
	e.SetIndent(2)
	if err := e.Encode(v); err != nil {
		return nil, fmt.Errorf("rendering yaml: %w", err)
	}
	if err := e.Close(); err != nil {
		return nil, fmt.Errorf("rendering yaml: %w", err)
	}
	return b.Bytes(), nil
}
