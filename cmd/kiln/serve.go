package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
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
	"github.com/kiln-dev/kiln/installer"
	"github.com/kiln-dev/kiln/metrics"
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
	dhcp6     bool
	range6    string

	dhcpConfig       string
	proxy            bool
	arm64File        string
	tftpMaxTransfers int
	tftpMaxWindow    int
	installer        string
	bootTimeout      time.Duration
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
	fs.StringVar(&f.dhcpConfig, "dhcp-config", "", "YAML file of more subnets (reached through relays) and reservations; see README")
	fs.BoolVar(&f.proxy, "proxy", false, "proxyDHCP: another DHCP server hands out addresses; kiln answers only PXE, HTTP Boot and iPXE clients, on ports 67 and 4011")
	fs.StringVar(&f.arm64File, "arm64-file", dhcp.DefaultARM64File, "TFTP file for UEFI ARM64 PXE clients (arch 11)")
	fs.IntVar(&f.tftpMaxTransfers, "tftp-max-transfers", tftp.DefaultMaxTransfers, "TFTP transfers served at once; more get \"server busy\"")
	fs.IntVar(&f.tftpMaxWindow, "tftp-max-window", tftp.DefaultMaxWindow, "largest TFTP windowsize (RFC 7440) granted; 1 turns the option off")
	fs.BoolVar(&f.dhcp6, "dhcp6", false, "also serve DHCPv6 (addresses and option 59 boot URLs) and router advertisements with the M flag and the on-link prefix on --interface, which needs a global or unique-local IPv6 address (e.g. fd77::1/64); kiln's HTTP also listens there")
	fs.StringVar(&f.range6, "range6", "", "DHCPv6 pool FIRST-LAST: addresses, or interface IDs such as ::1000-::1fff (the default) in the interface's prefix")
	fs.StringVar(&f.installer, "installer", "", "the kiln-installer binary (static, built by make) that install-mode machines boot; default: kiln-installer beside the kiln binary, if there")
	fs.DurationVar(&f.bootTimeout, "boot-timeout", fleet.DefaultBootTimeout, "how long a boot's token is valid if the machine never reports ready")
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
	if f.bootTimeout <= 0 {
		return usagef("serve: --boot-timeout %s: want a positive duration", f.bootTimeout)
	}
	installerCPIO, err := installerInitramfs(f.installer, log)
	if err != nil {
		return err
	}
	fl, err := fleet.New(fleet.Config{Store: st, Log: log, BootTimeout: f.bootTimeout, ImageExists: func(id string) error {
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

	mx := metrics.New()
	mx.SetMachines(func() map[string]int {
		n, err := fl.CountByState()
		if err != nil {
			log.Warn("counting machines for /metrics", "err", err)
		}
		return n
	})

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
	var (
		prefix6 netip.Prefix
		ln6     net.Listener
	)
	if f.dhcp6 {
		if ipnet == nil {
			ln.Close()
			return usagef("serve: --dhcp6 needs --interface")
		}
		if prefix6, err = interfaceIPv6(f.iface); err != nil {
			ln.Close()
			return usageError{err}
		}
		port := ln.Addr().(*net.TCPAddr).Port
		if ln6, err = net.Listen("tcp", net.JoinHostPort(prefix6.Addr().String(), strconv.Itoa(port))); err != nil {
			ln.Close()
			return fmt.Errorf("http: %w", err)
		}
		if err := startDHCP6(ctx, g, f, prefix6, port, st, fl, mx, log); err != nil {
			ln.Close()
			ln6.Close()
			stop()
			g.Wait()
			return err
		}
	}
	closeListeners := func() {
		ln.Close()
		if ln6 != nil {
			ln6.Close()
		}
	}
	if ipnet != nil {
		if err := startNetboot(ctx, g, f, ipnet, prefix6, addr, st, fl, mx, log); err != nil {
			closeListeners()
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
	wsrv, err := web.New(web.Config{Fleet: fl, Images: imgs, BaseURL: "http://" + addr, HTTPBootFile: httpBootFile, InstallerInitramfs: installerCPIO, Metrics: mx, Log: log})
	if err != nil {
		closeListeners()
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
	if ln6 != nil {
		g.Go(func() error {
			if err := hs.Serve(ln6); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("http on %s: %w", ln6.Addr(), err)
			}
			return nil
		})
	}
	log.Info("kiln serving", "version", version, "http", "http://"+addr, "inventory", "http://"+addr+"/", "data", f.data)
	fmt.Fprintf(stdout, "kiln: serving http://%s (inventory page at http://%s/)\n", addr, addr)
	return g.Wait()
}

// startNetboot starts DHCP and TFTP on the interface whose address is ipnet;
// PXE clients are sent to the HTTP server at httpAddr.
func startNetboot(ctx context.Context, g *errgroup.Group, f serveFlags, ipnet *net.IPNet, prefix6 netip.Prefix, httpAddr string, st store.Store, fl *fleet.Fleet, mx *metrics.Metrics, log *slog.Logger) error {
	if f.tftpMaxTransfers < 1 {
		return usagef("serve: --tftp-max-transfers %d: want at least 1", f.tftpMaxTransfers)
	}
	if f.tftpMaxWindow < 1 {
		return usagef("serve: --tftp-max-window %d: want at least 1", f.tftpMaxWindow)
	}
	disc := newDiscoverer(ctx, fl, log)
	cfg := dhcp.Config{
		Interface: f.iface,
		ServerIP:  ipnet.IP,
		Proxy:     f.proxy,
		Leases:    st,
		Log:       log.With("component", "dhcp"),
		Boot: dhcp.Boot{
			ScriptURL: func(mac net.HardwareAddr) string {
				return fmt.Sprintf("http://%s/boot/%s.ipxe", httpAddr, mac)
			},
			HTTPBootURL: func(mac net.HardwareAddr) string {
				return fmt.Sprintf("http://%s/httpboot/%s.efi", httpAddr, mac)
			},
			BIOSFile:  f.biosFile,
			UEFIFile:  f.uefiFile,
			ARM64File: f.arm64File,
		},
		Observer: func(ev dhcp.Event) {
			kind, detail := fleet.EventOffered, ev.IP.String()
			if ev.Kind == "acked" {
				kind = fleet.EventAcked
			}
			_, err := fl.Observe(ev.MAC.String(), kind, detail)
			if errors.Is(err, fleet.ErrNotFound) {
				disc.seen(ev.MAC.String())
			} else if err != nil {
				log.Warn("recording dhcp event", "mac", ev.MAC, "err", err)
			}
		},
		OnDecision: func(d dhcp.Decision) { mx.DHCPPacket(d.MsgType, d.Outcome, d.Relayed, d.Duration) },
	}
	if err := dhcpSubnets(&cfg, f, ipnet); err != nil {
		return err
	}
	dsrv, err := dhcp.New(cfg)
	if err != nil {
		return usageError{fmt.Errorf("dhcp: %w", err)}
	}
	mx.SetPoolUsage(func() []metrics.PoolUsage {
		var out []metrics.PoolUsage
		for _, u := range dsrv.Usage() {
			out = append(out, metrics.PoolUsage(u))
		}
		return out
	})
	// proxyDHCP shares port 67 with the segment's DHCP server, which may run
	// on this host, and also answers PXE boot server requests on 4011.
	var conns []net.PacketConn
	if f.proxy {
		c67, err := dhcp.ListenInterfaceShared(f.iface, 67)
		if err != nil {
			dsrv.Close()
			return fmt.Errorf("dhcp: %w", err)
		}
		c4011, err := dhcp.ListenInterfacePort(f.iface, dhcp.PXEPort)
		if err != nil {
			c67.Close()
			dsrv.Close()
			return fmt.Errorf("dhcp: %w", err)
		}
		conns = append(conns, c67, c4011)
	} else {
		c, err := dhcp.ListenInterface(f.iface)
		if err != nil {
			dsrv.Close()
			return fmt.Errorf("dhcp: %w", err)
		}
		conns = append(conns, c)
	}
	var dg errgroup.Group
	for _, c := range conns {
		dg.Go(func() error { return dsrv.Serve(ctx, c) })
	}
	g.Go(func() error {
		defer dsrv.Close()
		return dg.Wait()
	})

	tsrv, err := tftp.New(tftp.Config{
		Root:         f.tftpRoot,
		MaxTransfers: f.tftpMaxTransfers,
		MaxWindow:    f.tftpMaxWindow,
		Log:          log.With("component", "tftp"),
		Observer:     func(t tftp.Transfer) { observeTFTP(t, dsrv, fl, mx, log) },
	})
	if err != nil {
		return usageError{fmt.Errorf("tftp: %w", err)}
	}
	// With --dhcp6, UEFI IPv6 PXE clients are sent to tftp://[prefix6]/.
	tconns := []*net.UDPConn{}
	addrs := []*net.UDPAddr{{IP: ipnet.IP, Port: f.tftpPort}}
	if prefix6.IsValid() {
		addrs = append(addrs, &net.UDPAddr{IP: prefix6.Addr().AsSlice(), Port: f.tftpPort})
	}
	for _, a := range addrs {
		c, err := net.ListenUDP("udp", a)
		if err != nil {
			for _, c := range tconns {
				c.Close()
			}
			tsrv.Close()
			return fmt.Errorf("tftp: %w", err)
		}
		tconns = append(tconns, c)
	}
	var tg errgroup.Group
	for _, c := range tconns {
		tg.Go(func() error { return tsrv.Serve(ctx, c) })
	}
	g.Go(func() error {
		defer tsrv.Close()
		return tg.Wait()
	})
	// Router advertisements (lifetime 0: we are not a router) end iPXE's
	// ~14 s wait for IPv6 configuration after DHCP.
	ra := dhcp.RAConfig{Interface: f.iface, Log: log.With("component", "ra")}
	if prefix6.IsValid() {
		// With --dhcp6: M flag (addresses come from kiln's DHCPv6) and
		// the on-link prefix, without which UEFI HTTP Boot finds no
		// route to kiln's IPv6 address. No A flag: no SLAAC addresses.
		ra.Managed = true
		ra.Prefixes = []dhcp.RAPrefix{{Prefix: prefix6.Masked(), OnLink: true}}
	}
	g.Go(func() error { return dhcp.ServeRA(ctx, ra) })
	var pools []string
	for _, u := range dsrv.Usage() {
		pools = append(pools, u.Pool)
	}
	log.Info("netboot started", "iface", f.iface, "ip", ipnet.IP, "proxy", f.proxy, "pools", strings.Join(pools, ","), "tftp_root", f.tftpRoot)
	return nil
}

// dhcpSubnets fills cfg's subnets and reservations from --dhcp-config and the
// interface's own subnet (--range, --router, --dns). In proxy mode there are
// none: another server hands out the addresses.
func dhcpSubnets(cfg *dhcp.Config, f serveFlags, ipnet *net.IPNet) error {
	if f.proxy {
		if f.dhcpConfig != "" || f.dhcpRange != "" {
			return usagef("serve: --proxy hands out no addresses: drop --dhcp-config and --range")
		}
		return nil
	}
	if f.dhcpConfig != "" {
		b, err := os.ReadFile(f.dhcpConfig)
		if err != nil {
			return usagef("serve: --dhcp-config: %v", err)
		}
		file, err := dhcp.ParseConfigFile(b)
		if err != nil {
			return usagef("serve: --dhcp-config %s: %v", f.dhcpConfig, err)
		}
		cfg.Subnets, cfg.Reservations = file.Subnets, file.Reservations
	}
	self, _ := netip.AddrFromSlice(ipnet.IP.To4())
	for _, sn := range cfg.Subnets {
		if sn.Prefix.Contains(self) {
			// The file describes the interface's own subnet: it wins, and
			// flags that would describe it too are a contradiction.
			if f.dhcpRange != "" || f.router != "" || f.dns != "" {
				return usagef("serve: --dhcp-config %s describes the interface's subnet %s: drop --range, --router and --dns", f.dhcpConfig, sn.Prefix)
			}
			return nil
		}
	}
	start, end, err := poolRange(f.dhcpRange, ipnet)
	if err != nil {
		return usageError{err}
	}
	ones, _ := ipnet.Mask.Size()
	sn := dhcp.Subnet{
		Prefix:    netip.PrefixFrom(self, ones).Masked(),
		Pools:     []dhcp.Pool{{Start: netip.AddrFrom4([4]byte(start.To4())), End: netip.AddrFrom4([4]byte(end.To4()))}},
		LeaseTime: f.leaseTime,
	}
	if f.router != "" {
		r, err := netip.ParseAddr(f.router)
		if err != nil || !r.Is4() {
			return usagef("serve: --router %q is not an IPv4 address", f.router)
		}
		sn.Router = r
	}
	if f.dns != "" {
		for _, s := range strings.Split(f.dns, ",") {
			a, err := netip.ParseAddr(strings.TrimSpace(s))
			if err != nil || !a.Is4() {
				return usagef("serve: --dns %q: %q is not an IPv4 address", f.dns, s)
			}
			sn.DNS = append(sn.DNS, a)
		}
	}
	cfg.Subnets = append([]dhcp.Subnet{sn}, cfg.Subnets...)
	return nil
}

// observeTFTP counts a TFTP transfer and records a completed one as the
// machine's first hop; the machine is found by its lease.
func observeTFTP(t tftp.Transfer, dsrv *dhcp.Server, fl *fleet.Fleet, mx *metrics.Metrics, log *slog.Logger) {
	outcome := metrics.TFTPError
	switch {
	case t.Err == nil:
		outcome = metrics.TFTPOK
	case errors.Is(t.Err, tftp.ErrNotFound):
		outcome = metrics.TFTPNotFound
	case errors.Is(t.Err, tftp.ErrAccess):
		outcome = metrics.TFTPAccessDenied
	case errors.Is(t.Err, tftp.ErrBusy):
		outcome = metrics.TFTPBusy
	case errors.Is(t.Err, tftp.ErrSizeProbe):
		outcome = metrics.TFTPSizeProbe
	}
	mx.TFTPTransfer(outcome, t.Bytes, t.Duration)
	if t.Err != nil {
		return
	}
	host, _, err := net.SplitHostPort(t.Remote)
	if err != nil {
		return
	}
	l, ok := dsrv.LeaseFor(net.ParseIP(host))
	if !ok {
		return // proxy mode, or a client kiln gave no address
	}
	if _, err := fl.Observe(l.MAC, fleet.EventFirstHop, "tftp "+t.File); err != nil && !errors.Is(err, fleet.ErrNotFound) {
		log.Warn("recording tftp event", "mac", l.MAC, "err", err)
	}
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

// installerInitramfs builds the initramfs of the kiln-installer binary at
// path, or, with no path, of kiln-installer beside the running kiln if it
// is there. Without an installer, install boots are refused with a message
// that says so.
func installerInitramfs(path string, log *slog.Logger) ([]byte, error) {
	if path == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, nil
		}
		path = filepath.Join(filepath.Dir(exe), "kiln-installer")
		if _, err := os.Stat(path); err != nil {
			log.Info("no kiln-installer beside kiln: install-mode machines cannot install (give --installer)", "looked_for", path)
			return nil, nil
		}
	}
	if err := installer.CheckStatic(path); err != nil {
		return nil, usagef("serve: --installer: %v", err)
	}
	var b bytes.Buffer
	if err := installer.Initramfs(&b, path); err != nil {
		return nil, usagef("serve: --installer %s: %v", path, err)
	}
	log.Info("installer initramfs built", "installer", path, "bytes", b.Len())
	return b.Bytes(), nil
}

// discoverer records the unknown MACs DHCP serves as discovered machines,
// off the DHCP handler's path: a storm of unknown clients must not wait on
// the store. A full queue drops the MAC; its next packet brings it again.
type discoverer struct{ queue chan string }

func newDiscoverer(ctx context.Context, fl *fleet.Fleet, log *slog.Logger) *discoverer {
	d := &discoverer{queue: make(chan string, 256)}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case mac := <-d.queue:
				if _, created, err := fl.Discover(mac); err != nil {
					log.Debug("recording a discovered machine", "mac", mac, "err", err)
				} else if created {
					log.Info("machine discovered", "mac", mac)
				}
			}
		}
	}()
	return d
}

func (d *discoverer) seen(mac string) {
	select {
	case d.queue <- mac:
	default:
	}
}
