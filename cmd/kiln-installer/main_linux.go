// Command kiln-installer is the /init (PID 1) of kiln's install boot. It
// is built static (CGO_ENABLED=0) and packed by installer.Initramfs into
// an initramfs that iPXE loads after the image's own initrd.
//
// It mounts /proc, /sys and /dev, reads kiln.install=URL (and optionally
// kiln.disk=/dev/NAME) from /proc/cmdline, loads the kernel modules it
// finds under /lib/modules (the NIC driver comes from the image's initrd),
// configures the first NIC with DHCPv4, then runs installer.Install: fetch
// the plan, stream the image to the disk, verify it, write the seed, report
// to kiln. Whatever happens it ends with a reboot: at once after
// "kiln-installer: installed", 10 s after "kiln-installer: FAILED <reason>".
//
// It refuses to run unless it is PID 1, so that starting it by mistake on a
// live system cannot overwrite a disk. Run by hand, "kiln-installer
// initramfs FILE" writes that initramfs, with itself as /init.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/insomniacslk/dhcp/netboot"
	"golang.org/x/sys/unix"

	"github.com/kiln-dev/kiln/installer"
)

// BUG(kiln): only the main goroutine's panics become "FAILED" and a
// reboot; a panic in another goroutine (e.g. the DHCP client's receive
// loop) ends PID 1 and the kernel panics (with panic=-1 on the kernel
// line, that too reboots).

// prefix starts every console line; the e2e greps for it.
const prefix = "kiln-installer: "

// failDelay is how long a failure stays on the console before the reboot.
const failDelay = 10 * time.Second

// networkTimeout bounds the wait for a NIC and a DHCP lease.
const networkTimeout = 60 * time.Second

func main() {
	if os.Getpid() != 1 {
		os.Exit(notInit(os.Args[1:]))
	}
	defer func() {
		if r := recover(); r != nil {
			say("FAILED panic: %v", r)
			say("%s", debug.Stack())
			reboot(failDelay)
		}
	}()
	setup()
	if err := run(context.Background()); err != nil {
		say("FAILED %v", err)
		reboot(failDelay)
	}
	say("done %s s after the kernel started", uptime())
	say("installed")
	reboot(0)
}

// notInit runs when the program is not PID 1. "kiln-installer initramfs
// FILE" writes the initramfs that carries this very binary as /init (see
// installer.Initramfs); anything else is refused.
func notInit(args []string) int {
	if len(args) == 2 && args[0] == "initramfs" {
		if err := writeInitramfs(args[1]); err != nil {
			fmt.Fprintln(os.Stderr, prefix+err.Error())
			return 1
		}
		return 0
	}
	fmt.Fprintln(os.Stderr, prefix+"refusing to run: not PID 1 (this program overwrites a disk and reboots; it is the /init of kiln's install initramfs)")
	fmt.Fprintln(os.Stderr, "usage: kiln-installer initramfs FILE   (write the initramfs carrying this binary)")
	return 2
}

// writeInitramfs writes the initramfs of the running binary to file.
func writeInitramfs(file string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if err := installer.Initramfs(f, self); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// say prints one console line.
func say(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	for line := range strings.Lines(msg) {
		fmt.Fprint(os.Stdout, prefix+strings.TrimRight(line, "\n")+"\n")
	}
}

// setup mounts the kernel file systems and makes sure stdout and stderr
// reach the console.
func setup() {
	for _, m := range []struct{ src, dir, fstype string }{
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
		{"devtmpfs", "/dev", "devtmpfs"},
	} {
		os.MkdirAll(m.dir, 0o755)
		if err := unix.Mount(m.src, m.dir, m.fstype, unix.MS_NOSUID, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			defer say("mounting %s: %v", m.dir, err) // once the console works
		}
	}
	os.MkdirAll("/etc", 0o755) // netboot.ConfigureInterface writes /etc/resolv.conf
	os.MkdirAll("/tmp", 0o1777)
	if _, err := unix.FcntlInt(1, unix.F_GETFD, 0); err != nil {
		// The kernel found no /dev/console when it started us.
		if fd, err := unix.Open("/dev/console", unix.O_RDWR|unix.O_NOCTTY, 0); err == nil {
			unix.Dup3(fd, 0, 0)
			unix.Dup3(fd, 1, 0)
			unix.Dup3(fd, 2, 0)
			if fd > 2 {
				unix.Close(fd)
			}
		}
	}
}

// run does everything up to the reboot.
func run(ctx context.Context) error {
	raw, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return fmt.Errorf("reading kernel command line: %w", err)
	}
	cmdline, err := installer.ParseCmdline(string(raw))
	if err != nil {
		return err
	}
	say("starting (disk %s)", orDefault(cmdline.Disk, "auto"))

	res := installer.LoadModules([]string{"/lib/modules", "/usr/lib/modules"}, func(name string, image []byte) error {
		return unix.InitModule(image, "")
	})
	if res.Rounds == 0 {
		say("no kernel modules under /lib/modules or /usr/lib/modules (the NIC driver must be built in)")
	} else {
		say("modules: %d loaded in %d rounds %v", len(res.Loaded), res.Rounds, res.Loaded)
	}
	for name, err := range res.Failed {
		say("module %s: %v", name, err)
	}

	nctx, cancel := context.WithTimeout(ctx, networkTimeout)
	defer cancel()
	ifname, err := configureNetwork(nctx, installer.InstallMAC(cmdline.InstallURL))
	if err != nil {
		return err
	}
	say("network up on %s", ifname)

	return installer.Install(ctx, installer.Config{
		Cmdline: cmdline,
		Client:  httpClient(),
		Log:     say,
	})
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// httpClient has connect and header timeouts but no overall one: a disk
// image takes as long as it takes (installer.Write detects stalls).
func httpClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ResponseHeaderTimeout: 30 * time.Second,
		MaxIdleConnsPerHost:   2,
	}}
}

// configureNetwork waits for a NIC (the one with the MAC of the install
// URL first, then the others in index order), brings it up and configures
// it with DHCPv4. It returns the interface's name.
func configureNetwork(ctx context.Context, want net.HardwareAddr) (string, error) {
	var last error
	for ctx.Err() == nil {
		for _, ifc := range candidates(want) {
			if err := dhcp(ctx, ifc); err != nil {
				last = fmt.Errorf("%s: %w", ifc.Name, err)
				say("dhcp: %v", last)
				continue
			}
			return ifc.Name, nil
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
	if last == nil {
		return "", errors.New("no network interface appeared (is the NIC driver in the image's initrd?)")
	}
	return "", fmt.Errorf("no DHCPv4 lease: %w", last)
}

// candidates lists the Ethernet interfaces, want first.
func candidates(want net.HardwareAddr) []net.Interface {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil
	}
	var out []net.Interface
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagLoopback == 0 && len(ifc.HardwareAddr) == 6 {
			out = append(out, ifc)
		}
	}
	slices.SortStableFunc(out, func(a, b net.Interface) int {
		am, bm := a.HardwareAddr.String() == want.String(), b.HardwareAddr.String() == want.String()
		switch {
		case am && !bm:
			return -1
		case bm && !am:
			return 1
		}
		return 0
	})
	return out
}

// dhcp brings ifc up, gets a lease and configures address, route and DNS.
func dhcp(ctx context.Context, ifc net.Interface) error {
	if _, err := netboot.IfUp(ifc.Name, 10*time.Second); err != nil {
		return err
	}
	c, err := nclient4.New(ifc.Name, nclient4.WithTimeout(4*time.Second), nclient4.WithRetry(3))
	if err != nil {
		return err
	}
	defer c.Close()
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	lease, err := c.Request(dctx)
	if err != nil {
		return err
	}
	conf, err := netboot.GetNetConfFromPacketv4(lease.ACK)
	if err != nil {
		return err
	}
	if err := netboot.ConfigureInterface(ifc.Name, conf); err != nil {
		return err
	}
	say("dhcp: %s got %s from %v, routers %v", ifc.Name, conf.Addresses[0].IPNet.String(), lease.ACK.ServerIdentifier(), conf.Routers)
	return nil
}

// uptime returns the first field of /proc/uptime, or "?".
func uptime() string {
	b, err := os.ReadFile("/proc/uptime")
	if f := strings.Fields(string(b)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "?"
}

// reboot syncs and restarts the machine after delay. PID 1 must never
// return, so if reboot(2) fails it sleeps forever.
func reboot(delay time.Duration) {
	if delay > 0 {
		say("rebooting in %v", delay)
		time.Sleep(delay)
	}
	unix.Sync()
	err := unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	say("reboot: %v", err)
	for {
		time.Sleep(time.Hour)
	}
}
