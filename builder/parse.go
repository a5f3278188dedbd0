package builder

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// parseRecipe decodes one YAML recipe document strictly, without validating
// its values. file names the recipe in messages.
func parseRecipe(file string, data []byte) (*Recipe, error) {
	r := &Recipe{file: file, lines: map[string]int{}}
	// Decoding into a yaml.Node checks the syntax only; the walk below is
	// what rejects unknown fields, duplicate fields and wrong types, naming
	// the field and its line (KnownFields(true) names Go types instead).
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &RecipeError{File: file, Err: errors.New("empty document")}
		}
		return nil, yamlError(file, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, yamlError(file, err)
		}
		return nil, &RecipeError{File: file, Line: extra.Line, Err: errors.New("more than one YAML document")}
	}
	p := &parser{r: r}
	root := &doc
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		root = doc.Content[0]
	}
	p.recipe(root)
	if len(p.errs) > 0 {
		return nil, joinErrors(p.errs)
	}
	return r, nil
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// yamlError turns a yaml syntax error into a RecipeError carrying its line.
func yamlError(file string, err error) error {
	if m := yamlLineRE.FindStringSubmatch(err.Error()); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &RecipeError{File: file, Line: line, Err: errors.New(m[2])}
	}
	return &RecipeError{File: file, Err: err}
}

// joinErrors returns the only error of errs, or all of them joined.
func joinErrors(errs []error) error {
	if len(errs) == 1 {
		return errs[0]
	}
	return errors.Join(errs...)
}

// parser walks a recipe's YAML nodes into a Recipe, collecting errors.
type parser struct {
	r    *Recipe
	errs []error
}

func (p *parser) fail(n *yaml.Node, field, format string, args ...any) {
	p.errs = append(p.errs, &RecipeError{File: p.r.file, Line: n.Line, Field: field, Err: fmt.Errorf(format, args...)})
}

// recipeFields are a recipe's top-level fields, in the order docs list them.
var recipeFields = []string{"name", "arch", "kernel", "base", "cmdline", "owner", "overlays", "users", "ssh_keys", "files", "services", "env", "outputs"}

func (p *parser) recipe(n *yaml.Node) {
	r := p.r
	p.mapping(n, "", recipeFields, func(key string, v *yaml.Node) {
		switch key {
		case "name":
			p.str(v, key, &r.Name)
		case "arch":
			p.str(v, key, &r.Arch)
		case "kernel":
			p.kernel(v)
		case "base":
			p.base(v)
		case "cmdline":
			p.str(v, key, &r.Cmdline)
		case "owner":
			p.owner(v)
		case "overlays":
			p.strList(v, key, &r.Overlays)
		case "users":
			p.users(v)
		case "ssh_keys":
			p.strList(v, key, &r.SSHKeys)
		case "files":
			p.files(v)
		case "services":
			p.strList(v, key, &r.Services)
		case "env":
			p.strMap(v, key, &r.Env)
		case "outputs":
			p.strList(v, key, &r.Outputs)
		}
	})
}

// kernel accepts a host path, or {base: GLOB} for a kernel in the base.
func (p *parser) kernel(n *yaml.Node) {
	if deref(n).Kind != yaml.MappingNode {
		p.str(n, "kernel", &p.r.Kernel)
		return
	}
	p.mapping(n, "kernel", []string{"base"}, func(key string, v *yaml.Node) {
		p.str(v, "kernel.base", &p.r.KernelGlob)
	})
	if p.r.KernelGlob == "" {
		p.fail(deref(n), "kernel.base", "required: a glob in the base, e.g. /boot/vmlinuz-*")
	}
}

// base accepts a host path, or {debian: {suite, packages, mirror, variant}}.
func (p *parser) base(n *yaml.Node) {
	if deref(n).Kind != yaml.MappingNode {
		p.str(n, "base", &p.r.Base)
		return
	}
	p.mapping(n, "base", []string{"debian"}, func(key string, v *yaml.Node) {
		d := &DebianBase{}
		p.r.Debian = d
		p.mapping(v, "base.debian", []string{"suite", "packages", "mirror", "variant"}, func(key string, v *yaml.Node) {
			field := "base.debian." + key
			switch key {
			case "suite":
				p.str(v, field, &d.Suite)
			case "packages":
				p.strList(v, field, &d.Packages)
			case "mirror":
				p.str(v, field, &d.Mirror)
			case "variant":
				p.str(v, field, &d.Variant)
			}
		})
	})
	if p.r.Debian == nil {
		p.fail(deref(n), "base.debian", "required: a path, or debian: {suite, packages}")
	}
}

func (p *parser) users(n *yaml.Node) {
	n = deref(n)
	if n.Kind != yaml.SequenceNode {
		p.fail(n, "users", "want a list of users, have %s", describe(n))
		return
	}
	known := []string{"name", "uid", "gid", "groups", "home", "shell", "password", "ssh_keys"}
	for i, item := range n.Content {
		prefix := fmt.Sprintf("users[%d]", i)
		p.r.lines[prefix] = deref(item).Line
		var u User
		hasUID := false
		p.mapping(item, prefix, known, func(key string, v *yaml.Node) {
			field := prefix + "." + key
			switch key {
			case "name":
				p.str(v, field, &u.Name)
			case "uid":
				hasUID = true
				p.id(v, field, &u.UID)
			case "gid":
				u.GID = new(uint32)
				p.id(v, field, u.GID)
			case "groups":
				p.strList(v, field, &u.Groups)
			case "home":
				p.str(v, field, &u.Home)
			case "shell":
				p.str(v, field, &u.Shell)
			case "password":
				p.str(v, field, &u.Password)
			case "ssh_keys":
				p.strList(v, field, &u.SSHKeys)
			}
		})
		if !hasUID && deref(item).Kind == yaml.MappingNode {
			p.fail(deref(item), prefix+".uid", "required")
		}
		p.r.Users = append(p.r.Users, u)
	}
}

// strList decodes a list of strings.
func (p *parser) strList(n *yaml.Node, field string, dst *[]string) {
	n = deref(n)
	if n.Kind != yaml.SequenceNode {
		p.fail(n, field, "want a list of strings, have %s", describe(n))
		return
	}
	for i, item := range n.Content {
		f := fmt.Sprintf("%s[%d]", field, i)
		p.r.lines[f] = deref(item).Line
		var s string
		p.str(item, f, &s)
		*dst = append(*dst, s)
	}
}

// strMap decodes a mapping of strings to strings, keeping no order.
func (p *parser) strMap(n *yaml.Node, field string, dst *map[string]string) {
	n = deref(n)
	if n.Kind != yaml.MappingNode {
		p.fail(n, field, "want a mapping of names to strings, have %s", describe(n))
		return
	}
	*dst = map[string]string{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := deref(n.Content[i]), deref(n.Content[i+1])
		if k.Kind != yaml.ScalarNode || k.ShortTag() != "!!str" {
			p.fail(k, field, "want a name, have %s", describe(k))
			continue
		}
		f := field + "." + k.Value
		if _, dup := (*dst)[k.Value]; dup {
			p.fail(k, f, "duplicate field")
			continue
		}
		p.r.lines[f] = k.Line
		var s string
		if v.Kind == yaml.ScalarNode && v.ShortTag() != "!!str" && v.ShortTag() != "!!null" {
			// Numbers and booleans are written as they are in the YAML.
			s = v.Value
		} else {
			p.str(v, f, &s)
		}
		(*dst)[k.Value] = s
	}
}

func (p *parser) owner(n *yaml.Node) {
	if isNull(deref(n)) {
		return
	}
	have := map[string]bool{}
	p.mapping(n, "owner", []string{"uid", "gid"}, func(key string, v *yaml.Node) {
		have[key] = true
		switch key {
		case "uid":
			p.id(v, "owner.uid", &p.r.Owner.UID)
		case "gid":
			p.id(v, "owner.gid", &p.r.Owner.GID)
		}
	})
	if deref(n).Kind == yaml.MappingNode {
		for _, k := range []string{"uid", "gid"} {
			if !have[k] {
				p.fail(deref(n), "owner."+k, "required when owner is set")
			}
		}
	}
}

func (p *parser) files(n *yaml.Node) {
	n = deref(n)
	if isNull(n) {
		return
	}
	if n.Kind != yaml.SequenceNode {
		p.fail(n, "files", "want a list of files, have %s", describe(n))
		return
	}
	known := []string{"path", "mode", "source", "content", "uid", "gid", "template"}
	for i, item := range n.Content {
		prefix := fmt.Sprintf("files[%d]", i)
		p.r.lines[prefix] = deref(item).Line
		var f File
		p.mapping(item, prefix, known, func(key string, v *yaml.Node) {
			field := prefix + "." + key
			switch key {
			case "path":
				p.str(v, field, &f.Path)
			case "mode":
				p.str(v, field, &f.Mode)
			case "source":
				p.str(v, field, &f.Source)
			case "content":
				p.content(v, field, &f.Content)
			case "uid":
				f.UID = new(uint32)
				p.id(v, field, f.UID)
			case "gid":
				f.GID = new(uint32)
				p.id(v, field, f.GID)
			case "template":
				p.boolean(v, field, &f.Template)
			}
		})
		p.r.Files = append(p.r.Files, f)
	}
}

// mapping walks the mapping n, calling set for each known key in order and
// reporting unknown and duplicate keys. A null value counts as absent.
func (p *parser) mapping(n *yaml.Node, prefix string, known []string, set func(key string, v *yaml.Node)) {
	n = deref(n)
	if n.Kind != yaml.MappingNode {
		p.fail(n, prefix, "want a mapping, have %s", describe(n))
		return
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := deref(n.Content[i]), n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			p.fail(k, prefix, "want a field name, have %s", describe(k))
			continue
		}
		field := k.Value
		if prefix != "" {
			field = prefix + "." + k.Value
		}
		if first, dup := seen[k.Value]; dup {
			p.fail(k, field, "duplicate field (first at line %d)", first)
			continue
		}
		seen[k.Value] = k.Line
		if !slices.Contains(known, k.Value) {
			p.fail(k, field, "unknown field (want one of: %s)", strings.Join(known, ", "))
			continue
		}
		p.r.lines[field] = k.Line
		if isNull(deref(v)) {
			continue
		}
		set(k.Value, v)
	}
}

func (p *parser) str(n *yaml.Node, field string, dst *string) {
	n = deref(n)
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		hint := ""
		if strings.HasSuffix(field, ".mode") && n.ShortTag() == "!!int" {
			hint = fmt.Sprintf(" (quote it: %q)", n.Value)
		}
		p.fail(n, field, "want a string, have %s%s", describe(n), hint)
		return
	}
	if !utf8.ValidString(n.Value) {
		p.fail(n, field, "%q: not valid UTF-8", n.Value)
		return
	}
	*dst = n.Value
}

// content accepts a string or !!binary (base64) data.
func (p *parser) content(n *yaml.Node, field string, dst **string) {
	n = deref(n)
	if n.Kind != yaml.ScalarNode || (n.ShortTag() != "!!str" && n.ShortTag() != "!!binary") {
		p.fail(n, field, "want a string, have %s", describe(n))
		return
	}
	var s string
	if err := n.Decode(&s); err != nil {
		p.fail(n, field, "%s: %v", describe(n), err)
		return
	}
	*dst = &s
}

func (p *parser) boolean(n *yaml.Node, field string, dst *bool) {
	n = deref(n)
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" || n.Decode(dst) != nil {
		p.fail(n, field, "want true or false, have %s", describe(n))
	}
}

func (p *parser) id(n *yaml.Node, field string, dst *uint32) {
	n = deref(n)
	var v int64
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || n.Decode(&v) != nil {
		p.fail(n, field, "want an integer from 0 to %d, have %s", maxID, describe(n))
		return
	}
	if v < 0 || v > maxID {
		p.fail(n, field, "%d: want an integer from 0 to %d", v, maxID)
		return
	}
	*dst = uint32(v)
}

// deref follows aliases to the node they name.
func deref(n *yaml.Node) *yaml.Node {
	for i := 0; n.Kind == yaml.AliasNode && n.Alias != nil && i < 16; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// describe names a node's type for messages: a mapping, an integer 5, ...
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	case yaml.DocumentNode:
		return "a document"
	}
	v := n.Value
	if len(v) > 40 {
		v = v[:40] + "..."
	}
	switch n.ShortTag() {
	case "!!str":
		return fmt.Sprintf("a string %q", v)
	case "!!int":
		return "an integer " + v
	case "!!float":
		return "a number " + v
	case "!!bool":
		return "a boolean " + v
	case "!!null":
		return "null"
	case "!!binary":
		return "binary data"
	}
	return fmt.Sprintf("a value tagged %s", n.ShortTag())
}
