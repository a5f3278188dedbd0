package builder

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"path"
	"slices"
	"strconv"
	"strings"
)

// This file lays the recipe's own content over the base: overlays, users,
// SSH keys, templates and enabled services.

// addOverlays lays the recipe's overlay directories over the tree, in
// order, owned by the recipe's owner.
func (s *scanner) addOverlays(t *tree, r *Recipe) error {
	for i, o := range r.Overlays {
		if err := s.scanDir(t, r.resolve(o)); err != nil {
			return r.errorf(fmt.Sprintf("overlays[%d]", i), "%s: %w", o, err)
		}
		if err := t.complete(r.Owner); err != nil {
			return r.errorf(fmt.Sprintf("overlays[%d]", i), "%s: %w", o, err)
		}
	}
	return nil
}

// readText returns the content of the file at p (no leading slash), "" if
// there is none.
func (t *tree) readText(p string) (string, error) {
	e := t.entries[p]
	if e == nil {
		return "", nil
	}
	if e.typ != typeFile {
		return "", fmt.Errorf("/%s is a %s, not a file", p, e.typ)
	}
	rc, err := e.open()
	if err != nil {
		return "", err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, 64<<20))
	return string(b), err
}

// putText makes p a file holding s, keeping the mode and owner of the entry
// it replaces, or taking perm and uid:gid for a new one.
func (t *tree) putText(p, s string, perm, uid, gid uint32) error {
	if err := t.overlay(p); err != nil {
		return err
	}
	e := &entry{path: p, typ: typeFile, perm: perm, uid: uid, gid: gid}
	if old := t.entries[p]; old != nil && old.typ == typeFile {
		e.perm, e.uid, e.gid = old.perm, old.uid, old.gid
	}
	setContent(e, []byte(s))
	t.entries[p] = e
	return nil
}

// mkdir adds the directory p if the tree has none.
func (t *tree) mkdir(p string, perm, uid, gid uint32) error {
	if e := t.entries[p]; e != nil {
		if e.typ != typeDir {
			return fmt.Errorf("/%s is a %s, not a directory", p, e.typ)
		}
		return nil
	}
	if err := t.overlay(p); err != nil {
		return err
	}
	t.entries[p] = &entry{path: p, typ: typeDir, perm: perm, uid: uid, gid: gid}
	return nil
}

// dbFile is a colon-separated account database: /etc/passwd, group, shadow.
type dbFile struct {
	lines [][]string
}

func parseDB(s string) *dbFile {
	db := &dbFile{}
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if l := sc.Text(); l != "" {
			db.lines = append(db.lines, strings.Split(l, ":"))
		}
	}
	return db
}

// find returns the index of the line whose field i is v, or -1.
func (db *dbFile) find(i int, v string) int {
	return slices.IndexFunc(db.lines, func(l []string) bool { return len(l) > i && l[i] == v })
}

// set replaces the line named fields[0], or appends it.
func (db *dbFile) set(fields ...string) {
	if j := db.find(0, fields[0]); j >= 0 {
		db.lines[j] = fields
		return
	}
	db.lines = append(db.lines, fields)
}

func (db *dbFile) String() string {
	var b strings.Builder
	for _, l := range db.lines {
		b.WriteString(strings.Join(l, ":"))
		b.WriteByte('\n')
	}
	return b.String()
}

// addUsers adds the recipe's users to /etc/passwd, /etc/group and
// /etc/shadow, makes their homes and writes the SSH keys of root and of
// each user.
func (t *tree) addUsers(r *Recipe) error {
	if len(r.Users) == 0 && len(r.SSHKeys) == 0 {
		return nil
	}
	var dbs [3]*dbFile
	for i, name := range []string{"etc/passwd", "etc/group", "etc/shadow"} {
		s, err := t.readText(name)
		if err != nil {
			return r.errorf("users", "%w", err)
		}
		dbs[i] = parseDB(s)
	}
	passwd, group, shadow := dbs[0], dbs[1], dbs[2]
	for i, u := range r.Users {
		field := fmt.Sprintf("users[%d]", i)
		uid := strconv.FormatUint(uint64(u.UID), 10)
		if j := passwd.find(2, uid); j >= 0 && passwd.lines[j][0] != u.Name {
			return r.errorf(field+".uid", "%d: the base already gives it to %q", u.UID, passwd.lines[j][0])
		}
		gid := u.UID
		if u.GID != nil {
			gid = *u.GID
		}
		gids := strconv.FormatUint(uint64(gid), 10)
		if group.find(2, gids) < 0 {
			if group.find(0, u.Name) >= 0 {
				return r.errorf(field+".gid", "the base has a group %q with another number than %d", u.Name, gid)
			}
			group.set(u.Name, "x", gids, "")
		}
		for k, g := range u.Groups {
			j := group.find(0, g)
			if j < 0 {
				return r.errorf(fmt.Sprintf("%s.groups[%d]", field, k), "%q: no such group in the image", g)
			}
			l := group.lines[j]
			for len(l) < 4 {
				l = append(l, "")
			}
			members := slices.DeleteFunc(strings.Split(l[3], ","), func(s string) bool { return s == "" })
			if !slices.Contains(members, u.Name) {
				members = append(members, u.Name)
			}
			l[3] = strings.Join(members, ",")
			group.lines[j] = l
		}
		home, shell, pw := u.Home, u.Shell, u.Password
		if home == "" {
			home = "/home/" + u.Name
			if u.UID == 0 {
				home = "/root"
			}
		}
		if shell == "" {
			shell = "/bin/sh"
		}
		if pw == "" {
			pw = "!"
		}
		passwd.set(u.Name, "x", uid, gids, "", home, shell)
		// Empty last-change field: password ageing off, so the image is
		// the same whatever day it is baked.
		shadow.set(u.Name, pw, "", "0", "99999", "7", "", "", "")
		h := strings.TrimPrefix(home, "/")
		if err := t.mkdir(h, 0o750, u.UID, gid); err != nil {
			return r.errorf(field+".home", "%w", err)
		}
		if err := t.complete(r.Owner); err != nil {
			return r.errorf(field+".home", "%w", err)
		}
		if err := t.addKeys(h, u.SSHKeys, u.UID, gid); err != nil {
			return r.errorf(field+".ssh_keys", "%w", err)
		}
	}
	if len(r.SSHKeys) > 0 {
		home := "root"
		if j := passwd.find(0, "root"); j >= 0 && len(passwd.lines[j]) > 5 {
			home = strings.TrimPrefix(path.Clean("/"+passwd.lines[j][5]), "/")
		}
		if err := t.mkdir(home, 0o700, 0, 0); err != nil {
			return r.errorf("ssh_keys", "%w", err)
		}
		if err := t.complete(r.Owner); err != nil {
			return r.errorf("ssh_keys", "%w", err)
		}
		if err := t.addKeys(home, r.SSHKeys, 0, 0); err != nil {
			return r.errorf("ssh_keys", "%w", err)
		}
	}
	if len(r.Users) == 0 {
		return nil
	}
	for _, f := range []struct {
		path string
		db   *dbFile
		perm uint32
		gid  uint32
	}{{"etc/passwd", passwd, 0o644, 0}, {"etc/group", group, 0o644, 0}, {"etc/shadow", shadow, 0o640, shadowGID(group)}} {
		if err := t.putText(f.path, f.db.String(), f.perm, 0, f.gid); err != nil {
			return r.errorf("users", "%w", err)
		}
	}
	return t.complete(r.Owner)
}

// shadowGID is the gid of the "shadow" group, which reads /etc/shadow on
// Debian, or 0.
func shadowGID(group *dbFile) uint32 {
	if j := group.find(0, "shadow"); j >= 0 && len(group.lines[j]) > 2 {
		if n, err := strconv.ParseUint(group.lines[j][2], 10, 32); err == nil {
			return uint32(n)
		}
	}
	return 0
}

// addKeys writes keys to HOME/.ssh/authorized_keys, owned by uid:gid.
func (t *tree) addKeys(home string, keys []string, uid, gid uint32) error {
	if len(keys) == 0 {
		return nil
	}
	if err := t.mkdir(home+"/.ssh", 0o700, uid, gid); err != nil {
		return err
	}
	p := home + "/.ssh/authorized_keys"
	if err := t.overlay(p); err != nil {
		return err
	}
	e := &entry{path: p, typ: typeFile, perm: 0o600, uid: uid, gid: gid}
	setContent(e, []byte(strings.Join(keys, "\n")+"\n"))
	t.entries[p] = e
	return nil
}

// templateData is what file templates see.
type templateData struct {
	Name string
	Arch string
	Env  map[string]string
}

// render runs the template of files[i] on content.
func render(r *Recipe, i int, content []byte) ([]byte, error) {
	tmpl, err := parseTemplate(r.Files[i].Path, string(content))
	if err != nil {
		return nil, err
	}
	env := r.Env
	if env == nil {
		env = map[string]string{}
	}
	var b bytes.Buffer
	if err := tmpl.Execute(&b, templateData{Name: r.Name, Arch: r.arch(), Env: env}); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// renderSource reads files[i]'s source and renders it.
func renderSource(ctx context.Context, r *Recipe, i int, open func() (io.ReadCloser, error)) ([]byte, error) {
	rc, err := open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(ctxReader{ctx, rc}, 16<<20))
	if err != nil {
		return nil, err
	}
	return render(r, i, b)
}

// unitDirs are where services are looked for, in systemd's order.
var unitDirs = []string{"etc/systemd/system", "usr/lib/systemd/system", "lib/systemd/system"}

// enableServices links each of the recipe's services into the .wants (or
// .requires) directory of every target its [Install] section names, as
// systemctl enable does.
func (t *tree) enableServices(r *Recipe) error {
	for i, name := range r.Services {
		field := fmt.Sprintf("services[%d]", i)
		file := name
		if at := strings.Index(name, "@"); at >= 0 && !strings.HasPrefix(name[at:], "@.") {
			file = name[:at+1] + name[strings.LastIndex(name, "."):] // foo@bar.service → foo@.service
		}
		var unitPath string
		for _, d := range unitDirs {
			if e := t.entries[d+"/"+file]; e != nil {
				unitPath = d + "/" + file
				break
			}
		}
		if unitPath == "" {
			return r.errorf(field, "%s: no unit file in /%s", name, strings.Join(unitDirs, ", /"))
		}
		text, err := t.readText(unitPath)
		if err != nil {
			return r.errorf(field, "%s: %w", name, err)
		}
		wanted, required := installTargets(text)
		if len(wanted)+len(required) == 0 {
			return r.errorf(field, "%s: /%s has no WantedBy= or RequiredBy= in [Install], nothing to enable it from", name, unitPath)
		}
		link := func(dir string) error {
			p := "etc/systemd/system/" + dir + "/" + name
			if err := t.overlay(p); err != nil {
				return err
			}
			t.entries[p] = &entry{path: p, typ: typeSymlink, perm: 0o777, uid: r.Owner.UID, gid: r.Owner.GID, link: "/" + unitPath}
			return t.complete(r.Owner)
		}
		for _, w := range wanted {
			if err := link(w + ".wants"); err != nil {
				return r.errorf(field, "%s: %w", name, err)
			}
		}
		for _, w := range required {
			if err := link(w + ".requires"); err != nil {
				return r.errorf(field, "%s: %w", name, err)
			}
		}
	}
	return nil
}

// installTargets returns the WantedBy= and RequiredBy= units of a unit
// file's [Install] section.
func installTargets(unit string) (wanted, required []string) {
	section := ""
	for _, l := range strings.Split(unit, "\n") {
		l = strings.TrimSpace(l)
		switch {
		case l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, ";"):
			continue
		case strings.HasPrefix(l, "[") && strings.HasSuffix(l, "]"):
			section = l
			continue
		}
		if section != "[Install]" {
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "WantedBy":
			wanted = append(wanted, strings.Fields(v)...)
		case "RequiredBy":
			required = append(required, strings.Fields(v)...)
		}
	}
	return wanted, required
}

// findKernel returns the one regular file in the tree that the recipe's
// kernel glob matches, following symlinks in the tree.
func (t *tree) findKernel(r *Recipe) (*entry, error) {
	var matches []string
	for p, e := range t.entries {
		if ok, _ := path.Match(r.KernelGlob, "/"+p); ok && e.typ != typeDir {
			matches = append(matches, p)
		}
	}
	slices.Sort(matches)
	switch len(matches) {
	case 0:
		return nil, r.errorf("kernel.base", "%s: matches nothing in the base (install a kernel package, e.g. linux-image-cloud-amd64)", r.KernelGlob)
	case 1:
	default:
		return nil, r.errorf("kernel.base", "%s: matches %d files (/%s), want exactly one", r.KernelGlob, len(matches), strings.Join(matches, ", /"))
	}
	e, err := t.follow(matches[0])
	if err != nil {
		return nil, r.errorf("kernel.base", "%s: %w", r.KernelGlob, err)
	}
	return e, nil
}

// follow resolves symlinks in the tree, up to 16 of them, from p to a
// regular file.
func (t *tree) follow(p string) (*entry, error) {
	for range 16 {
		e := t.entries[p]
		switch {
		case e == nil:
			return nil, fmt.Errorf("/%s does not exist", p)
		case e.typ == typeFile:
			return e, nil
		case e.typ != typeSymlink:
			return nil, fmt.Errorf("/%s is a %s, not a file", p, e.typ)
		}
		l := e.link
		if !strings.HasPrefix(l, "/") {
			l = path.Join("/", path.Dir(p), l)
		}
		p = strings.TrimPrefix(path.Clean(l), "/")
	}
	return nil, fmt.Errorf("/%s: too many levels of symbolic links", p)
}

// kernelVersion guesses the kernel's version from its file name,
// vmlinuz-VERSION, or from the only directory under /lib/modules.
func (t *tree) kernelVersion(kernelPath string) string {
	base := path.Base(kernelPath)
	for _, prefix := range []string{"vmlinuz-", "vmlinux-", "bzImage-", "Image-"} {
		if v, ok := strings.CutPrefix(base, prefix); ok && v != "" {
			return v
		}
	}
	var found []string
	for _, dir := range []string{"lib/modules", "usr/lib/modules"} {
		for p, e := range t.entries {
			if e.typ == typeDir && path.Dir(p) == dir {
				found = append(found, path.Base(p))
			}
		}
	}
	slices.Sort(found)
	found = slices.Compact(found)
	if len(found) == 1 {
		return found[0]
	}
	return ""
}
