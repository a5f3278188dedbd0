package main

import (
	"bytes"
	"net"
	"strings"
	"testing"
)

func TestParseFlagsInterspersedAndEnv(t *testing.T) {
	t.Setenv("KILN_IMAGES", "/from/env")
	var stderr bytes.Buffer
	fs := newFlagSet("build", "x", &stderr)
	dir := fs.String("images", "", "")
	asJSON := fs.Bool("json", false, "")
	pos, err := parseFlags(fs, []string{"recipe.yaml", "--json"})
	if err != nil {
		t.Fatal(err)
	}
	if len(pos) != 1 || pos[0] != "recipe.yaml" || !*asJSON || *dir != "/from/env" {
		t.Fatalf("parseFlags = %q json=%v images=%q", pos, *asJSON, *dir)
	}
	fs = newFlagSet("build", "x", &stderr)
	dir = fs.String("images", "", "")
	if _, err := parseFlags(fs, []string{"--images", "/from/flag", "r.yaml"}); err != nil || *dir != "/from/flag" {
		t.Fatalf("flag did not override env: %q, %v", *dir, err)
	}
}

func TestPoolRange(t *testing.T) {
	for _, tc := range []struct {
		cidr, spec, want string
		ok               bool
	}{
		{"10.77.0.1/24", "", "10.77.0.128-10.77.0.254", true},
		{"10.77.0.200/24", "", "10.77.0.128-10.77.0.199", true},
		{"10.77.0.130/24", "", "10.77.0.131-10.77.0.254", true},
		{"10.0.0.1/16", "", "10.0.128.0-10.0.255.254", true},
		{"10.77.0.1/30", "", "", false},
		{"10.77.0.1/24", "10.77.0.10-10.77.0.20", "10.77.0.10-10.77.0.20", true},
		{"10.77.0.1/24", "10.77.0.10", "", false},
	} {
		ip, ipnet, _ := net.ParseCIDR(tc.cidr)
		ipnet.IP = ip.To4()
		a, b, err := poolRange(tc.spec, ipnet)
		if (err == nil) != tc.ok {
			t.Errorf("poolRange(%q, %s) err = %v, want ok=%v", tc.spec, tc.cidr, err, tc.ok)
			continue
		}
		if got := a.String() + "-" + b.String(); tc.ok && got != tc.want {
			t.Errorf("poolRange(%q, %s) = %s, want %s", tc.spec, tc.cidr, got, tc.want)
		}
	}
}

func TestUsageExitCodes(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{nil, exitUsage, "Usage"},
		{[]string{"frobnicate"}, exitUsage, "unknown command"},
		{[]string{"build"}, exitUsage, "RECIPE"},
		{[]string{"build", "x.yaml"}, exitUsage, "--images"},
		{[]string{"serve"}, exitUsage, "--data"},
		{[]string{"serve", "--data", "d", "--log-level", "loud"}, exitUsage, "--log-level"},
		{[]string{"machines", "get"}, exitUsage, "MAC"},
		{[]string{"build", "--help"}, exitOK, "--images"},
		{[]string{"version"}, exitOK, ""},
	} {
		var out, errb bytes.Buffer
		code := run(tc.args, &out, &errb)
		if code != tc.code || !strings.Contains(out.String()+errb.String(), tc.msg) {
			t.Errorf("run(%q) = %d, output %q; want %d containing %q", tc.args, code, out.String()+errb.String(), tc.code, tc.msg)
		}
	}
}
