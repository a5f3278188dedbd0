package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"text/tabwriter"
	"time"
)

const machinesUsage = `kiln machines add  --server URL --mac MAC --hostname NAME --image ID [--json]
kiln machines get  --server URL MAC [--json]
kiln machines list --server URL [--json]
kiln machines rm   --server URL MAC`

func cmdMachines(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usagef("machines: want a subcommand\n%s", machinesUsage)
	}
	sub, args := args[0], args[1:]
	fs := newFlagSet("machines "+sub, machinesUsage, stderr)
	server := fs.String("server", "http://127.0.0.1:8080", "URL of a running kiln serve")
	asJSON := fs.Bool("json", false, "print JSON")
	var mac, hostname, image *string
	if sub == "add" {
		mac = fs.String("mac", "", "the machine's MAC address")
		hostname = fs.String("hostname", "", "the machine's host name")
		image = fs.String("image", "", "ID of the image to boot (sha256:...)")
	}
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	c := newAPIClient(*server, 30*time.Second)
	ctx := context.Background()
	switch sub {
	case "add":
		if len(pos) != 0 {
			return usagef("machines add: unexpected arguments %q", pos)
		}
		body, _ := json.Marshal(map[string]string{"mac": *mac, "hostname": *hostname, "image": *image})
		var m machineView
		if err := c.do(ctx, http.MethodPost, "/api/v1/machines", body, &m); err != nil {
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
		fmt.Fprintln(tw, "MAC\tHOSTNAME\tSTATE\tIP\tIMAGE")
		for _, m := range resp.Machines {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", m.MAC, m.Hostname, m.State, m.IP, m.Image)
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

// machineView is the part of the API's machine JSON the CLI prints; --json
// passes the whole object through.
type machineView struct {
	MAC      string `json:"mac"`
	Hostname string `json:"hostname"`
	Image    string `json:"image"`
	State    string `json:"state"`
	IP       string `json:"ip"`
	Reason   string `json:"reason"`
	raw      json.RawMessage
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
	fmt.Fprintf(w, "mac:      %s\nhostname: %s\nstate:    %s\nimage:    %s\n", m.MAC, m.Hostname, m.State, m.Image)
	if m.IP != "" {
		fmt.Fprintf(w, "ip:       %s\n", m.IP)
	}
	if m.Reason != "" {
		fmt.Fprintf(w, "reason:   %s\n", m.Reason)
	}
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
