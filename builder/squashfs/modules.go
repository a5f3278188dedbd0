package squashfs

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// requiredModules are the modules stage 1 cannot boot without: the virtio
// NIC of virtual machines and its PCI transport, and what mounting the root
// takes. Each must be in modules.dep or built in.
var requiredModules = []string{"virtio_net", "virtio_pci", "loop", "squashfs", "overlay"}

// optionalModules are the drivers of common physical and cloud NICs, added
// when the kernel has them as modules. Stage 1 goes on if one fails to load.
var optionalModules = []string{
	"e1000", "e1000e", "igb", "igc", "ixgbe", "i40e", "ice",
	"bnxt_en", "tg3", "r8169", "mlx4_en", "mlx5_core", "ena", "vmxnet3",
}

// moduleExts are the file name endings of kernel modules, the uncompressed
// one (the only kind busybox insmod loads) first.
var moduleExts = []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"}

// module is one module of the stage-1 load list.
type module struct {
	name     string // as in /sys/module: "virtio_net"
	path     string // relative to lib/modules/<kver>, as modules.dep has it
	required bool   // stage 1 fails if it does not load
}

// modIndex is what modules.dep and modules.builtin say about a kernel.
type modIndex struct {
	deps    map[string][]string // module path → paths of its dependencies, as listed
	byName  map[string]string   // module name → path
	builtin map[string]bool     // names of the modules built into the kernel
}

// modName returns the name the kernel gives the module at p:
// "kernel/drivers/net/virtio_net.ko.xz" and ".../virtio-net.ko" are both
// "virtio_net".
func modName(p string) string {
	base := path.Base(p)
	for _, ext := range moduleExts {
		if strings.HasSuffix(base, ext) {
			base = strings.TrimSuffix(base, ext)
			break
		}
	}
	return strings.ReplaceAll(base, "-", "_")
}

// parseModulesDep reads modules.dep: lines "path: dep dep ...".
func parseModulesDep(r io.Reader, idx *modIndex) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		p, deps, ok := strings.Cut(line, ":")
		if !ok || p == "" {
			return fmt.Errorf("line %d: no \"module:\"", n)
		}
		idx.deps[p] = strings.Fields(deps)
		idx.byName[modName(p)] = p
	}
	return sc.Err()
}

// parseModulesBuiltin reads modules.builtin: one module path a line.
func parseModulesBuiltin(r io.Reader, idx *modIndex) error {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" && !strings.HasPrefix(line, "#") {
			idx.builtin[modName(line)] = true
		}
	}
	return sc.Err()
}

// readModIndex reads modules.dep and, if there is one, modules.builtin from
// the modules directory dir.
func readModIndex(dir string) (*modIndex, error) {
	idx := &modIndex{deps: map[string][]string{}, byName: map[string]string{}, builtin: map[string]bool{}}
	f, err := os.Open(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := parseModulesDep(f, idx); err != nil {
		return nil, fmt.Errorf("reading %s: %w", f.Name(), err)
	}
	b, err := os.Open(filepath.Join(dir, "modules.builtin"))
	if errors.Is(err, fs.ErrNotExist) {
		return idx, nil
	}
	if err != nil {
		return nil, err
	}
	defer b.Close()
	if err := parseModulesBuiltin(b, idx); err != nil {
		return nil, fmt.Errorf("reading %s: %w", b.Name(), err)
	}
	return idx, nil
}

// loadOrder returns the modules to load for the names in required and
// those of optional that the kernel has as modules, each after its
// dependencies, each once. Built-in modules are left out; a required name
// that is neither a module nor built in is an error. A dependency of a
// required module is required.
func (idx *modIndex) loadOrder(required, optional []string) ([]module, error) {
	var roots []string
	for _, name := range required {
		switch p, ok := idx.byName[name]; {
		case ok:
			roots = append(roots, p)
		case !idx.builtin[name]:
			return nil, fmt.Errorf("module %s is neither in modules.dep nor built in", name)
		}
	}
	// Everything reachable from the required roots is required.
	need := map[string]bool{}
	if err := idx.walk(roots, func(p string) { need[p] = true }); err != nil {
		return nil, err
	}
	for _, name := range optional {
		if p, ok := idx.byName[name]; ok && !idx.builtin[name] {
			roots = append(roots, p)
		}
	}
	var mods []module
	err := idx.walk(roots, func(p string) {
		mods = append(mods, module{name: modName(p), path: p, required: need[p]})
	})
	return mods, err
}

// walk calls visit once for each module reachable from roots, after it has
// been called for the module's dependencies (a depth-first post-order). It
// visits a module's dependencies last to first, the order in which modprobe
// loads them, and skips built-in ones. It fails on a dependency cycle.
func (idx *modIndex) walk(roots []string, visit func(path string)) error {
	const (
		active = 1
		done   = 2
	)
	state := map[string]int{}
	var dfs func(p string, chain []string) error
	dfs = func(p string, chain []string) error {
		switch state[p] {
		case done:
			return nil
		case active:
			return fmt.Errorf("modules.dep has a dependency cycle: %s", strings.Join(append(chain, modName(p)), " -> "))
		}
		if idx.builtin[modName(p)] {
			state[p] = done
			return nil
		}
		state[p] = active
		chain = append(chain, modName(p))
		deps := idx.deps[p]
		for _, d := range slices.Backward(deps) {
			if err := dfs(d, chain); err != nil {
				return err
			}
		}
		state[p] = done
		visit(p)
		return nil
	}
	for _, p := range roots {
		if err := dfs(p, nil); err != nil {
			return err
		}
	}
	return nil
}

// readModule returns the uncompressed content of the module at p (relative
// to the modules directory dir). modules.dep may name a compressed file
// while the tree holds another kind (or the reverse): it tries each ending.
func readModule(dir, p string) (content []byte, source string, err error) {
	stem := p
	for _, ext := range moduleExts {
		if strings.HasSuffix(stem, ext) {
			stem = strings.TrimSuffix(stem, ext)
			break
		}
	}
	cands := []string{p}
	for _, ext := range moduleExts {
		if stem+ext != p {
			cands = append(cands, stem+ext)
		}
	}
	for _, c := range cands {
		host := filepath.Join(dir, c)
		if _, err := os.Stat(host); err != nil {
			continue
		}
		if strings.HasSuffix(c, ".ko") {
			return nil, host, nil
		}
		b, err := decompressFile(host)
		if err != nil {
			return nil, "", fmt.Errorf("decompressing %s: %w", host, err)
		}
		return b, "", nil
	}
	return nil, "", fmt.Errorf("no file %s, compressed or not: %w", filepath.Join(dir, p), fs.ErrNotExist)
}

// decompressFile returns the content of the xz, zstd or gzip file at name,
// chosen by its name's ending.
func decompressFile(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var r io.Reader
	switch {
	case strings.HasSuffix(name, ".xz"):
		xr, err := xz.NewReader(bufio.NewReader(f))
		if err != nil {
			return nil, err
		}
		r = xr
	case strings.HasSuffix(name, ".zst"):
		zr, err := zstd.NewReader(f, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, err
		}
		defer zr.Close()
		r = zr
	case strings.HasSuffix(name, ".gz"):
		gr, err := gzip.NewReader(f)
		if err != nil {
			return nil, err
		}
		r = gr
	default:
		return nil, fmt.Errorf("unknown compression")
	}
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, r); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
