package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/kiln-dev/kiln/dhcp"
	"github.com/kiln-dev/kiln/fleet"
	"github.com/kiln-dev/kiln/images"
	"github.com/kiln-dev/kiln/store"
	"github.com/kiln-dev/kiln/tftp"
	"github.com/kiln-dev/kiln/web"
)

type serveFlags struct {
	iface     string
	data      string
	httpPort  int
	tftpPort  int
	tftpRoot  string
	biosFile  string
	uefiFile  string
	dhcpRange string
	router    string
	dns       string
	leaseTime time.Duration
	logLevel  string
	logFormat string
}

func cmdServe(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("serve", "kiln serve --interface IFACE --data DIR [flags]", stderr)
	var f serveFlags
	fs.StringVar(&f.iface, "interface", "", "the ONLY interface to serve DHCP and TFTP on; without it kiln serves HTTP on 127.0.0.1 and refuses to start DHCP")
	fs.StringVar(&f.data, "data", "", "data directory: kiln.db (machines, leases) and images/ (the image store)")
	fs.IntVar(&f.httpPort, "http-port", 8080, "HTTP port (boot scripts, artifacts, API, inventory page)")
	fs.IntVar(&f.tftpPort, "tftp-port", 69, "TFTP port")
	fs.StringVar(&f.tftpRoot, "tftp-root", "/usr/lib/ipxe", "directory of iPXE binaries served over TFTP (Debian package ipxe)")
	fs.StringVar(&f.biosFile, "bios-file", "undionly.kpxe", "TFTP file for BIOS PXE clients (arch 0)")
	fs.StringVar(&f.uefiFile, "uefi-file", "snponly.efi", "TFTP file for UEFI x64 PXE clients (arch 7, 9)")
	fs.StringVar(&f.dhcpRange, "range", "", "DHCP pool FIRST-LAST, e.g. 10.77.0.100-10.77.0.199 (default: the upper half of the interface's subnet)")
	fs.StringVar(&f.router, "router", "", "default gateway handed to clients (option 3), if any")
	fs.StringVar(&f.dns, "dns", "", "comma-separated DNS servers handed to clients (option 6), if any")
	fs.DurationVar(&f.leaseTime, "lease-time", time.Hour, "DHCP lease time")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log-format", "text", "text or json")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("serve: unexpected arguments %q", pos)
	}
	log, err := newLogger(stderr, f.logLevel, f.logFormat)
	if err != nil {
		return err
	}
	if f.data == "" {
		return usagef("serve: --data DIR is required")
	}
	if f.httpPort < 0 || f.httpPort > 65535 {
		return usagef("serve: --http-port %d is not a port", f.httpPort)
	}

	// Wiring, bottom up: store → images, fleet → dhcp, tftp, web.
	if err := os.MkdirAll(f.data, 0o755); err != nil {
		return fmt.Errorf("creating --data %s: %w", f.data, err)
	}
	st, err := store.OpenBolt(filepath.Join(f.data, "kiln.db"))
	if err != nil {
		return err
	}
	defer st.Close()
	imgs, err := images.Open(filepath.Join(f.data, "images"))
	if err != nil {
		return err
	}
	fl, err := fleet.New(fleet.Config{Store: st, Log: log, ImageExists: func(id string) error {
		d, err := images.ParseDigest(id)
		if err != nil {
			return err
		}
		_, err = imgs.Get(d)
		return err
	}})
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	g, ctx := errgroup.WithContext(ctx)

	httpIP, ipnet := net.IPv4(127, 0, 0, 1), (*net.IPNet)(nil)
	if f.iface == "" {
		log.Warn("DHCP and TFTP not started: no --interface given; kiln never serves DHCP on an interface it was not told to use. Serving HTTP on loopback only.")
	} else {
		if ipnet, err = interfaceIPv4(f.iface); err != nil {
			return usageError{err}
		}
		httpIP = ipnet.IP
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(httpIP.String(), strconv.Itoa(f.httpPort)))
	if err != nil {
		return fmt.Errorf("http: %w", err)
	}
	addr := ln.Addr().String() // the real port when --http-port is 0
	if ipnet != nil {
		if err := startNetboot(ctx, g, f, ipnet, addr, st, fl, log); err != nil {
			ln.Close()
			stop()
			g.Wait()
			return err
		}
	}
	// UEFI HTTP Boot clients whose image has no UKI get the same EFI iPXE
	// that UEFI PXE clients get over TFTP, over HTTP.
	httpBootFile := ""
	if ipnet != nil && !strings.ContainsAny(f.uefiFile, `/\`) {
		if fi, err := os.Stat(filepath.Join(f.tftpRoot, f.uefiFile)); err == nil && fi.Mode().IsRegular() {
			httpBootFile = filepath.Join(f.tftpRoot, f.uefiFile)
		}
	}
	wsrv, err := web.New(web.Config{Fleet: fl, Images: imgs, BaseURL: "http://" + addr, HTTPBootFile: httpBootFile, Log: log})
	if err != nil {
		ln.Close()
		stop()
		g.Wait()
		return err
	}
	hs := &http.Server{Handler: wsrv.Handler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	g.Go(func() error {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return hs.Shutdown(sctx)
	})
	g.Go(func() error {
		if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http: %w", err)
		}
		return nil
	})
	log.Info("kiln serving", "version", version, "http", "http://"+addr, "inventory", "http://"+addr+"/", "data", f.data)
	fmt.Fprintf(stdout, "kiln: serving http://%s (inventory page at http://%s/)\n", addr, addr)
	return g.Wait()
}

// startNetboot starts DHCP and TFTP on the interface whose address is ipnet;
// PXE clients are sent to the HTTP server at httpAddr.
func startNetboot(ctx context.Context, g *errgroup.Group, f serveFlags, ipnet *net.IPNet, httpAddr string, st store.Store, fl *fleet.Fleet, log *slog.Logger) error {
	start, end, err := poolRange(f.dhcpRange, ipnet)
	if err != nil {
		return usageError{err}
	}
	cfg := dhcp.Config{
		Interface:  f.iface,
		ServerIP:   ipnet.IP,
		Subnet:     &net.IPNet{IP: ipnet.IP.Mask(ipnet.Mask), Mask: ipnet.Mask},
		RangeStart: start,
		RangeEnd:   end,
		LeaseTime:  f.leaseTime,
		Leases:     st,
		Log:        log.With("component", "dhcp"),
		Boot: dhcp.Boot{
			ScriptURL: func(mac net.HardwareAddr) string {
				return fmt.Sprintf("http://%s/boot/%s.ipxe", httpAddr, mac)
			},
			HTTPBootURL: func(mac net.HardwareAddr) string {
				return fmt.Sprintf("http://%s/httpboot/%s.efi", httpAddr, mac)
			},
			BIOSFile: f.biosFile,
			UEFIFile: f.uefiFile,
		},
		Observer: func(ev dhcp.Event) {
			kind, detail := fleet.EventOffered, ev.IP.String()
			if ev.Kind == "acked" {
				kind = fleet.EventAcked
			}
			if _, err := fl.Observe(ev.MAC.String(), kind, detail); err != nil && !errors.Is(err, fleet.ErrNotFound) {
				log.Warn("recording dhcp event", "mac", ev.MAC, "err", err)
			}
		},
	}
	if f.router != "" {
		if cfg.Router = net.ParseIP(f.router).To4(); cfg.Router == nil {
			return usagef("serve: --router %q is not an IPv4 address", f.router)
		}
	}
	if f.dns != "" {
		for _, s := range strings.Split(f.dns, ",") {
			ip := net.ParseIP(strings.TrimSpace(s)).To4()
			if ip == nil {
				return usagef("serve: --dns %q: %q is not an IPv4 address", f.dns, s)
			}
			cfg.DNS = append(cfg.DNS, ip)
		}
	}
	dsrv, err := dhcp.New(cfg)
	if err != nil {
		return usageError{fmt.Errorf("dhcp: %w", err)}
	}
	dconn, err := dhcp.ListenInterface(f.iface)
	if err != nil {
		return fmt.Errorf("dhcp: %w", err)
	}
	g.Go(func() error { return dsrv.Serve(ctx, dconn) })

	tsrv, err := tftp.New(tftp.Config{Root: f.tftpRoot, Log: log.With("component", "tftp")})
	if err != nil {
		return usageError{fmt.Errorf("tftp: %w", err)}
	}
	tconn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: ipnet.IP, Port: f.tftpPort})
	if err != nil {
		return fmt.Errorf("tftp: %w", err)
	}
	g.Go(func() error {
		defer tsrv.Close()
		return tsrv.Serve(ctx, tconn)
	})
	// Router advertisements (lifetime 0: we are not a router) end iPXE's
	// ~14 s wait for IPv6 configuration after DHCP.
	g.Go(func() error {
		return dhcp.ServeRA(ctx, dhcp.RAConfig{Interface: f.iface, Log: log.With("component", "ra")})
	})
	log.Info("netboot started", "iface", f.iface, "ip", ipnet.IP, "pool", fmt.Sprintf("%s-%s", start, end), "tftp_root", f.tftpRoot)
	return nil
}

// interfaceIPv4 returns the first IPv4 address of the named interface.
func interfaceIPv4(name string) (*net.IPNet, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return nil, fmt.Errorf("--interface %q: %w", name, err)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return nil, fmt.Errorf("--interface %q: %w", name, err)
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil {
			return &net.IPNet{IP: ipn.IP.To4(), Mask: ipn.Mask}, nil
		}
	}
	return nil, fmt.Errorf("--interface %q has no IPv4 address", name)
}

// poolRange parses FIRST-LAST, or derives the upper half of the subnet
// (without the broadcast address and the server's own address).
func poolRange(spec string, ipnet *net.IPNet) (net.IP, net.IP, error) {
	if spec != "" {
		a, b, ok := strings.Cut(spec, "-")
		start, end := net.ParseIP(strings.TrimSpace(a)).To4(), net.ParseIP(strings.TrimSpace(b)).To4()
		if !ok || start == nil || end == nil {
			return nil, nil, fmt.Errorf("--range %q: want FIRST-LAST IPv4 addresses", spec)
		}
		return start, end, nil
	}
	ones, bits := ipnet.Mask.Size()
	if bits != 32 || ones > 29 {
		return nil, nil, fmt.Errorf("--interface subnet /%d is too small to pick a pool: give --range", ones)
	}
	network := ipToUint(ipnet.IP.Mask(ipnet.Mask))
	size := uint32(1) << (32 - ones)
	first, last := network+size/2, network+size-2
	if self := ipToUint(ipnet.IP); self >= first && self <= last {
		if self-first >= last-self {
			last = self - 1
		} else {
			first = self + 1
		}
	}
	return uintToIP(first), uintToIP(last), nil
}

func ipToUint(ip net.IP) uint32 {
	ip = ip.To4()
	return uint32(ip[0])<<24 | uint32(ip[1])<<16 | uint32(ip[2])<<8 | uint32(ip[3])
}

func uintToIP(n uint32) net.IP {
	return net.IPv4(byte(n>>24), byte(n>>16), byte(n>>8), byte(n)).To4()
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, usagef("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usagef("--log-format %q: want text or json", format)
}
