package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"text/tabwriter"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/kiln-dev/kiln/identity"
)

const machinesUsage = `kiln machines add      --server URL --mac MAC --hostname NAME --image ID [--mode stateless|install] [--identity FILE] [--json]
kiln machines replace  --server URL MAC [--hostname NAME] [--image ID] [--mode ...] [--identity FILE] [--json]
kiln machines reimage  --server URL MAC [--json]
kiln machines rollback --server URL MAC [--json]
kiln machines retire   --server URL MAC [--json]
kiln machines get      --server URL MAC [--json]
kiln machines list     --server URL [--json]
kiln machines rm       --server URL MAC

A machine is never edited: add makes generation 1; replace (new image and/or
identity), reimage (the same again, booted fresh) and rollback (the generation
before the current one) each make the next generation, which the machine boots
at its next PXE boot ("re-image pending"); retire makes it boot nothing.
replace carries over what it is not given (hostname, image, mode, identity)
from the current generation. --identity FILE is a JSON or YAML file with the
rest of the minimal identity: domain, addresses, gateway, dns,
ssh_authorized_keys, ssh_host_keys, labels, macs. Every change is audited
with user@host of the caller.`

func cmdMachines(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usagef("machines: want a subcommand\n%s", machinesUsage)
	}
	sub, args := args[0], args[1:]
	fs := newFlagSet("machines "+sub, machinesUsage, stderr)
	server := fs.String("server", "http://127.0.0.1:8080", "URL of a running kiln serve")
	asJSON := fs.Bool("json", false, "print JSON")
	var mac, hostname, image, mode, idFile *string
	if sub == "add" || sub == "replace" {
		if sub == "add" {
			mac = fs.String("mac", "", "the machine's MAC address")
		}
		hostname = fs.String("hostname", "", "the machine's host name")
		image = fs.String("image", "", "ID of the image to boot (sha256:...)")
		mode = fs.String("mode", "", "boot mode: stateless (the image from the network at every boot, the default) or install (installed to the local disk)")
		idFile = fs.String("identity", "", "JSON or YAML file with the rest of the machine's identity")
	}
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	c := newAPIClient(*server, 30*time.Second)
	ctx := context.Background()
	switch sub {
	case "add", "replace":
		method, path := http.MethodPost, "/api/v1/machines"
		macArg := ""
		if sub == "add" {
			if len(pos) != 0 {
				return usagef("machines add: unexpected arguments %q", pos)
			}
			macArg = *mac
		} else {
			if len(pos) != 1 {
				return usagef("machines replace: want one MAC argument")
			}
			macArg = pos[0]
			method, path = http.MethodPut, "/api/v1/machines/"+url.PathEscape(macArg)
		}
		body, err := newMachineBody(macArg, *hostname, *image, *mode, *idFile)
		if err != nil {
			return err
		}
		var m machineView
		if err := c.do(ctx, method, path, body, &m); err != nil {
			return err
		}
		return printMachine(stdout, m, *asJSON)
	case "reimage", "rollback", "retire":
		if len(pos) != 1 {
			return usagef("machines %s: want one MAC argument", sub)
		}
		var m machineView
		if err := c.do(ctx, http.MethodPost, "/api/v1/machines/"+url.PathEscape(pos[0])+"/"+sub, nil, &m); err != nil {
			return err
		}
		return printMachine(stdout, m, *asJSON)
	case "get":
		if len(pos) != 1 {
			return usagef("machines get: want one MAC argument")
		}
		var m machineView
		if err := c.do(ctx, http.MethodGet, "/api/v1/machines/"+url.PathEscape(pos[0]), nil, &m); err != nil {
			return err
		}
		return printMachine(stdout, m, *asJSON)
	case "list":
		var resp struct {
			Machines []machineView `json:"machines"`
		}
		if err := c.do(ctx, http.MethodGet, "/api/v1/machines", nil, &resp); err != nil {
			return err
		}
		if *asJSON {
			return writeJSON(stdout, resp)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "MAC\tHOSTNAME\tSTATE\tGEN\tIP\tIMAGE")
		for _, m := range resp.Machines {
			gen := strconv.Itoa(m.Generation)
			if m.ReimagePending {
				gen += " (pending)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", m.MAC, m.Hostname, m.State, gen, m.IP, m.Image)
		}
		return tw.Flush()
	case "rm":
		if len(pos) != 1 {
			return usagef("machines rm: want one MAC argument")
		}
		return c.do(ctx, http.MethodDelete, "/api/v1/machines/"+url.PathEscape(pos[0]), nil, nil)
	}
	return usagef("machines: unknown subcommand %q\n%s", sub, machinesUsage)
}

// newMachineBody is the JSON body of add and replace. The identity file is
// decoded with identity.Decode, so that a field that belongs in the image
// is refused here with its name, before anything is sent.
func newMachineBody(mac, hostname, image, mode, idFile string) ([]byte, error) {
	body := map[string]any{"mac": mac, "hostname": hostname, "image": image}
	if mode != "" {
		if mode != "stateless" && mode != "install" {
			return nil, usagef("--mode %q: want stateless or install", mode)
		}
		body["mode"] = mode
	}
	if idFile != "" {
		b, err := os.ReadFile(idFile)
		if err != nil {
			return nil, usagef("--identity: %v", err)
		}
		if t := bytes.TrimSpace(b); len(t) == 0 || t[0] != '{' {
			// YAML: the same keys; identity.DecodePartial reads JSON.
			var v map[string]any
			if err := yaml.Unmarshal(b, &v); err != nil {
				return nil, usagef("--identity %s: not JSON, nor YAML: %v", idFile, err)
			}
			if b, err = json.Marshal(v); err != nil {
				return nil, usagef("--identity %s: %v", idFile, err)
			}
		}
		id, err := identity.DecodePartial(b)
		if err != nil {
			return nil, usagef("--identity %s: %v", idFile, err)
		}
		body["identity"] = id
	}
	return json.Marshal(body)
}

// machineView is the part of the API's machine JSON the CLI prints; --json
// passes the whole object through.
type machineView struct {
	MAC      string `json:"mac"`
	Hostname string `json:"hostname"`
	Image    string `json:"image"`
	State    string `json:"state"`
	IP       string `json:"ip"`
	Reason   string `json:"reason"`
	// Generation is the current generation; ReimagePending says the
	// machine has not booted it yet.
	Generation     int    `json:"generation"`
	ReimagePending bool   `json:"reimage_pending"`
	Mode           string `json:"mode"`
	RunningImage   string `json:"running_image"`
	Generations    []struct {
		N     int    `json:"n"`
		Image string `json:"image"`
	} `json:"generations"`
	raw json.RawMessage
}

func (m *machineView) UnmarshalJSON(b []byte) error {
	type plain machineView
	if err := json.Unmarshal(b, (*plain)(m)); err != nil {
		return err
	}
	m.raw = append(json.RawMessage(nil), b...)
	return nil
}

func (m machineView) MarshalJSON() ([]byte, error) { return m.raw, nil }

func printMachine(w io.Writer, m machineView, asJSON bool) error {
	if asJSON {
		return writeJSON(w, m)
	}
	fmt.Fprintf(w, "mac:        %s\nhostname:   %s\nstate:      %s\nimage:      %s\ngeneration: %d\n", m.MAC, m.Hostname, m.State, m.Image, m.Generation)
	if m.Mode != "" {
		fmt.Fprintf(w, "mode:       %s\n", m.Mode)
	}
	if m.ReimagePending {
		fmt.Fprintf(w, "pending:    re-image to generation %d at the next boot (running: %s)\n", m.Generation, orNone(m.RunningImage))
	}
	if m.IP != "" {
		fmt.Fprintf(w, "ip:         %s\n", m.IP)
	}
	if m.Reason != "" {
		fmt.Fprintf(w, "reason:     %s\n", m.Reason)
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
