package squashfs

import (
	"debug/elf"
	_ "embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// initScript is the stage-1 /init; udhcpcScript its DHCP event script.
var (
	//go:embed init.sh
	initScript []byte
	//go:embed udhcpc.sh
	udhcpcScript []byte
)

// ErrNoStaticBusybox is the error of Stage1 when the root has no
// statically linked busybox to run the stage-1 scripts with.
var ErrNoStaticBusybox = errors.New("squashfs output needs a static busybox in the image: add busybox-static")

// applets are the busybox commands the stage-1 scripts run, linked in /bin.
var applets = []string{
	"cat", "insmod", "ip", "mkdir", "mount", "readlink", "reboot", "rm", "sh",
	"sha256sum", "sleep", "switch_root", "timeout", "udhcpc", "wc", "wget",
}

// busyboxPaths are where Stage1 looks for busybox in the root, in order.
var busyboxPaths = []string{"usr/bin/busybox", "bin/busybox"}

// modulesDirs are where kernel modules live in a root, in order.
var modulesDirs = []string{"lib/modules", "usr/lib/modules"}

// File is one entry of the stage-1 initramfs. Exactly one of Dir, Link,
// Source and Content describes it (an empty Content is an empty file).
// Owners are root.
type File struct {
	Path    string // absolute path in the initramfs, e.g. "/init"
	Mode    uint32 // permission bits
	Dir     bool   // a directory
	Link    string // symlink target if a symlink
	Source  string // host path to copy from (regular file), or
	Content []byte // inline content
}

// Stage1 returns the files of the stage-1 initramfs, sorted by path, for a
// root tree materialized at the host path root whose kernel version is
// kver: the root's static busybox and links to the applets the scripts
// use, /init and its udhcpc script, and the kernel modules stage 1 needs
// (see the package documentation for what stage 1 does).
//
// The modules are virtio_net and virtio_pci, loop, squashfs and overlay,
// which must be modules or built in, and the drivers of common NICs that
// the kernel has as modules (e1000, e1000e, igb, igc, ixgbe, i40e, ice,
// bnxt_en, tg3, r8169, mlx4_en, mlx5_core, ena, vmxnet3), with their
// dependencies, resolved now from modules.dep; built-in modules are left
// out. Each ships uncompressed as /lib/modules/<name>.ko (busybox insmod
// loads no other kind: Stage1 decompresses .ko.xz, .ko.zst and .ko.gz).
// /etc/kiln/modules lists them in load order, dependencies first, one
// "<name> required|optional" a line; stage 1 goes on if an optional one
// fails to load.
func Stage1(root, kver string) ([]File, error) {
	busybox, err := staticBusybox(root)
	if err != nil {
		return nil, err
	}
	files := []File{
		{Path: "/bin", Mode: 0o755, Dir: true},
		{Path: "/bin/busybox", Mode: 0o755, Source: busybox},
		{Path: "/dev", Mode: 0o755, Dir: true},
		{Path: "/etc", Mode: 0o755, Dir: true},
		{Path: "/etc/kiln", Mode: 0o755, Dir: true},
		{Path: "/etc/udhcpc.script", Mode: 0o755, Content: udhcpcScript},
		{Path: "/init", Mode: 0o755, Content: initScript},
		{Path: "/lib", Mode: 0o755, Dir: true},
		{Path: "/lib/modules", Mode: 0o755, Dir: true},
		{Path: "/newroot", Mode: 0o755, Dir: true},
		{Path: "/proc", Mode: 0o555, Dir: true},
		{Path: "/run", Mode: 0o755, Dir: true},
		{Path: "/sys", Mode: 0o555, Dir: true},
	}
	for _, a := range applets {
		files = append(files, File{Path: "/bin/" + a, Mode: 0o777, Link: "busybox"})
	}
	mods, err := moduleFiles(root, kver)
	if err != nil {
		return nil, err
	}
	files = append(files, mods...)
	slices.SortFunc(files, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	return files, nil
}

// moduleFiles returns /etc/kiln/modules and the module files of stage 1.
func moduleFiles(root, kver string) ([]File, error) {
	dir, err := modulesDir(root, kver)
	if err != nil {
		return nil, err
	}
	idx, err := readModIndex(dir)
	if err != nil {
		return nil, fmt.Errorf("reading the module index of kernel %s: %w", kver, err)
	}
	mods, err := idx.loadOrder(requiredModules, optionalModules)
	if err != nil {
		return nil, fmt.Errorf("kernel %s: %w", kver, err)
	}
	var list strings.Builder
	files := []File{{Path: "/etc/kiln/modules", Mode: 0o644}}
	for _, m := range mods {
		content, source, err := readModule(dir, m.path)
		if err != nil {
			return nil, fmt.Errorf("module %s of kernel %s: %w", m.name, kver, err)
		}
		files = append(files, File{Path: "/lib/modules/" + m.name + ".ko", Mode: 0o644, Source: source, Content: content})
		need := "optional"
		if m.required {
			need = "required"
		}
		fmt.Fprintf(&list, "%s %s\n", m.name, need)
	}
	files[0].Content = []byte(list.String())
	return files, nil
}

// modulesDir returns the host path of the modules directory of kernel kver
// in root: the first of lib/modules/<kver> and usr/lib/modules/<kver> that
// has a modules.dep.
func modulesDir(root, kver string) (string, error) {
	if kver == "" || strings.ContainsAny(kver, "/") || kver == "." || kver == ".." {
		return "", fmt.Errorf("bad kernel version %q", kver)
	}
	for _, d := range modulesDirs {
		host, err := resolveIn(root, d+"/"+kver)
		if err != nil {
			continue
		}
		if _, err := os.Stat(filepath.Join(host, "modules.dep")); err == nil {
			return host, nil
		}
	}
	return "", fmt.Errorf("no modules.dep for kernel %s in %s/{%s}", kver, root, strings.Join(modulesDirs, ","))
}

// KernelVersion returns the kernel version of the root tree at root: want
// if it is not empty and root has modules for it, else the name of the one
// directory under lib/modules or usr/lib/modules that has a modules.dep.
// It fails if there is none, or several and want is empty.
func KernelVersion(root, want string) (string, error) {
	if want != "" {
		if _, err := modulesDir(root, want); err != nil {
			return "", err
		}
		return want, nil
	}
	var found []string
	for _, d := range modulesDirs {
		host, err := resolveIn(root, d)
		if err != nil {
			continue
		}
		ents, err := os.ReadDir(host)
		if err != nil {
			continue
		}
		for _, e := range ents {
			if _, err := os.Stat(filepath.Join(host, e.Name(), "modules.dep")); err == nil && !slices.Contains(found, e.Name()) {
				found = append(found, e.Name())
			}
		}
	}
	slices.Sort(found)
	switch len(found) {
	case 0:
		return "", fmt.Errorf("no kernel modules (lib/modules/*/modules.dep) in %s", root)
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("several kernels in %s (%s): name one", root, strings.Join(found, ", "))
}

// staticBusybox returns the host path of the root's busybox, checking that
// it is a statically linked ELF executable.
func staticBusybox(root string) (string, error) {
	var why []string
	seen := map[string]bool{} // with a merged /usr, both paths are one file
	for _, p := range busyboxPaths {
		host, err := resolveIn(root, p)
		if errors.Is(err, fs.ErrNotExist) || err == nil && seen[host] {
			continue
		}
		seen[host] = err == nil
		if err == nil {
			err = checkStatic(host)
		}
		if err == nil {
			return host, nil
		}
		why = append(why, fmt.Sprintf("/%s: %v", p, err))
	}
	if len(why) == 0 {
		return "", fmt.Errorf("%w (no /%s in %s)", ErrNoStaticBusybox, strings.Join(busyboxPaths, " or /"), root)
	}
	return "", fmt.Errorf("%w (%s)", ErrNoStaticBusybox, strings.Join(why, "; "))
}

// checkStatic returns an error if the file at name is not a statically
// linked ELF executable: one without a program interpreter (PT_INTERP).
func checkStatic(name string) error {
	f, err := elf.Open(name)
	var ferr *elf.FormatError
	if errors.As(err, &ferr) {
		return fmt.Errorf("not an ELF executable: %w", err)
	}
	if err != nil {
		return err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return errors.New("dynamically linked")
		}
	}
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return fmt.Errorf("not an executable (%v)", f.Type)
	}
	return nil
}
