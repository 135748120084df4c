// Package catalog is the compliance reference data Edgeward evaluates
// against: the frameworks (NIST SP 800-53 Rev. 5, CIS Controls v8, SOC 2
// Trust Services Criteria, ISO/IEC 27001:2022 Annex A), their families and
// controls, and cross-framework mappings taken from published mappings.
//
// The data is embedded in the binary as small tab-separated tables under
// data/, so every replica serves the same catalog without a download and a
// catalog change is an ordinary reviewed diff. The NIST tables are generated
// from NIST's OSCAL files by ./gen and a test keeps them generated; the other
// frameworks are hand-maintained and carry only identifiers, membership and
// Edgeward's own short titles, because their publishers' text is copyrighted.
package catalog

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"
)

//go:embed data
var embedded embed.FS

// data is the embedded data directory as the root of a file system, so the
// loader can be tested against hand-made file systems too.
var data = func() fs.FS {
	sub, err := fs.Sub(embedded, "data")
	if err != nil {
		panic(err) // cannot happen: the embed directive guarantees data/
	}
	return sub
}()

// NIST is the framework id of NIST SP 800-53 Rev. 5.
const NIST = "nist-800-53-r5"

// cprtElementURL is NIST's Cybersecurity and Privacy Reference Tool page for
// one control of SP 800-53 Rev. 5 (release 5.1.1, which keeps every control
// id of 5.0.1); the element id follows.
const cprtElementURL = "https://csrc.nist.gov/projects/cprt/catalog#/cprt/framework/version/SP_800_53_5_1_1/home?element="

// Column layouts of the tables. Load refuses a table whose header differs, so
// a column added in one place cannot be silently ignored in another.
var (
	frameworkColumns = []string{"id", "name", "version", "publisher", "url", "license"}
	familyColumns    = []string{"id", "title"}
	controlColumns   = []string{"key", "label", "family", "parent", "withdrawn", "baselines", "sort", "title"}
	mappingColumns   = []string{"from_framework", "from_key", "to_framework", "to_key", "source"}
)

// Version is the catalog's version (data/VERSION).
//
// Any change to the data bumps it; migrations compare it with the version
// stored in the database and then upgrade the stored catalog in place.
func Version() string {
	v, err := readVersion(data)
	if err != nil {
		return ""
	}
	return v
}

// Framework is one compliance framework in the catalog.
type Framework struct {
	ID        string // e.g. "nist-800-53-r5"
	Name      string
	Version   string
	Publisher string
	URL       string // the publisher's page for the framework
	License   string // what of the publisher's material the catalog carries, and on what terms
}

// Family groups a framework's controls: a NIST control family, a CIS
// Control, a SOC 2 criteria group, an ISO/IEC 27001 Annex A theme.
type Family struct {
	Framework string
	ID        string // e.g. "AC", "1", "CC6", "5"
	Title     string
}

// Control is one requirement of a framework: a NIST control or enhancement,
// a CIS Safeguard, a SOC 2 criterion, an ISO/IEC 27001 Annex A control.
type Control struct {
	Framework string
	Key       string // e.g. "ac-2.1", "1.1", "cc6.1", "a.5.1"
	Label     string // e.g. "AC-2(1)"
	Title     string
	Family    string // family id within the framework
	Parent    string // enhancement parent key, "" for base controls
	Withdrawn bool
	Baselines []string // nist: low/moderate/high/privacy; cis: ig1/ig2/ig3
	Sort      int      // position in the framework's own order
}

// ID is the control's global id used in the API: framework + ":" + key,
// e.g. "nist-800-53-r5:ac-2.1".
func (c Control) ID() string {
	return c.Framework + ":" + c.Key
}

// URL links to the publisher's page for the statement text where there is
// one, else "". Only NIST publishes a stable page per control; the catalog
// carries no statement text itself.
func (c Control) URL() string {
	if c.Framework != NIST {
		return ""
	}
	el, ok := cprtElement(c.Label)
	if !ok {
		return ""
	}
	return cprtElementURL + el
}

// cprtElement turns an SP 800-53 label into the CPRT element id, which pads
// control and enhancement numbers to two digits: "AC-2(1)" -> "AC-02(01)".
func cprtElement(label string) (string, bool) {
	family, rest, ok := strings.Cut(label, "-")
	if !ok || family == "" {
		return "", false
	}
	number, enhancement, isEnhancement := strings.Cut(rest, "(")
	el := family + "-" + pad2(number)
	if isEnhancement {
		enhancement, ok = strings.CutSuffix(enhancement, ")")
		if !ok {
			return "", false
		}
		el += "(" + pad2(enhancement) + ")"
	}
	return el, true
}

func pad2(n string) string {
	if len(n) == 1 {
		return "0" + n
	}
	return n
}

// Mapping relates a control of one framework to a control of another, as
// stated by the publication named in Source.
type Mapping struct {
	FromFramework, FromKey string
	ToFramework, ToKey     string
	Source                 string
}

// Catalog is the whole reference data set. Families and Controls are in
// framework order, then in each framework's own order.
type Catalog struct {
	Version    string
	Frameworks []Framework
	Families   []Family
	Controls   []Control
	Mappings   []Mapping
}

// Load parses the embedded tables and checks them (unique ids, parents
// exist, mapped controls exist, families exist); any error is a programming
// error in the data. Each call returns a fresh Catalog the caller may keep.
func Load() (*Catalog, error) {
	return load(data)
}

func load(fsys fs.FS) (*Catalog, error) {
	version, err := readVersion(fsys)
	if err != nil {
		return nil, err
	}
	c := &Catalog{Version: version}

	rows, err := readTable(fsys, "frameworks.tsv", frameworkColumns)
	if err != nil {
		return nil, err
	}
	used := map[string]bool{"frameworks.tsv": true, "mappings.tsv": true}
	keys := map[string]map[string]Control{} // framework -> key -> control
	for _, r := range rows {
		fw := Framework{ID: r.f[0], Name: r.f[1], Version: r.f[2], Publisher: r.f[3], URL: r.f[4], License: r.f[5]}
		if fw.ID == "" || fw.Name == "" || fw.Version == "" || fw.Publisher == "" {
			return nil, r.errorf("framework needs id, name, version and publisher")
		}
		if keys[fw.ID] != nil {
			return nil, r.errorf("duplicate framework %q", fw.ID)
		}
		c.Frameworks = append(c.Frameworks, fw)

		famFile, ctlFile := fw.ID+"-families.tsv", fw.ID+".tsv"
		used[famFile], used[ctlFile] = true, true
		families, err := loadFamilies(fsys, famFile, fw.ID)
		if err != nil {
			return nil, err
		}
		controls, err := loadControls(fsys, ctlFile, fw.ID, families)
		if err != nil {
			return nil, err
		}
		keys[fw.ID] = map[string]Control{}
		for _, ctl := range controls {
			keys[fw.ID][ctl.Key] = ctl
		}
		c.Families = append(c.Families, families...)
		c.Controls = append(c.Controls, controls...)
	}
	if len(c.Frameworks) == 0 {
		return nil, errors.New("catalog: frameworks.tsv lists no framework")
	}

	c.Mappings, err = loadMappings(fsys, keys)
	if err != nil {
		return nil, err
	}

	// A table nobody reads is a typo in a file name or a framework id.
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("catalog: %w", err)
	}
	for _, e := range entries {
		if path.Ext(e.Name()) == ".tsv" && !used[e.Name()] {
			return nil, fmt.Errorf("catalog: %s belongs to no framework in frameworks.tsv", e.Name())
		}
	}
	return c, nil
}

// loadFamilies reads a framework's families, in file order.
func loadFamilies(fsys fs.FS, name, framework string) ([]Family, error) {
	rows, err := readTable(fsys, name, familyColumns)
	if err != nil {
		return nil, err
	}
	var out []Family
	seen := map[string]bool{}
	for _, r := range rows {
		f := Family{Framework: framework, ID: r.f[0], Title: r.f[1]}
		if f.ID == "" || f.Title == "" {
			return nil, r.errorf("family needs an id and a title")
		}
		if seen[f.ID] {
			return nil, r.errorf("duplicate family %q", f.ID)
		}
		seen[f.ID] = true
		out = append(out, f)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("catalog: %s lists no family", name)
	}
	return out, nil
}

// loadControls reads a framework's controls and checks them against each
// other and against the framework's families.
func loadControls(fsys fs.FS, name, framework string, families []Family) ([]Control, error) {
	rows, err := readTable(fsys, name, controlColumns)
	if err != nil {
		return nil, err
	}
	familyIDs := map[string]bool{}
	for _, f := range families {
		familyIDs[f.ID] = true
	}
	var out []Control
	byKey := map[string]int{} // key -> index in out
	rowOf := map[string]row{}
	last := 0
	for _, r := range rows {
		ctl := Control{
			Framework: framework,
			Key:       r.f[0],
			Label:     r.f[1],
			Family:    r.f[2],
			Parent:    r.f[3],
			Title:     r.f[7],
		}
		switch {
		case ctl.Key == "" || strings.ContainsAny(ctl.Key, ": "):
			return nil, r.errorf("control key %q is empty or has a colon or space", ctl.Key)
		case ctl.Label == "" || ctl.Title == "":
			return nil, r.errorf("control %s needs a label and a title", ctl.Key)
		case !familyIDs[ctl.Family]:
			return nil, r.errorf("control %s: unknown family %q", ctl.Key, ctl.Family)
		}
		if _, dup := byKey[ctl.Key]; dup {
			return nil, r.errorf("duplicate control %q", ctl.Key)
		}
		switch r.f[4] {
		case "true":
			ctl.Withdrawn = true
		case "false":
		default:
			return nil, r.errorf("control %s: withdrawn must be true or false, not %q", ctl.Key, r.f[4])
		}
		if r.f[5] != "" {
			ctl.Baselines = strings.Split(r.f[5], ",")
			for i, b := range ctl.Baselines {
				if b == "" || slices.Contains(ctl.Baselines[:i], b) {
					return nil, r.errorf("control %s: empty or repeated baseline in %q", ctl.Key, r.f[5])
				}
			}
		}
		// Requiring rows in sort order keeps the file readable in the order
		// users see, and makes the sort column unique.
		if ctl.Sort, err = strconv.Atoi(r.f[6]); err != nil || ctl.Sort <= last {
			return nil, r.errorf("control %s: sort %q must be an integer above the previous row's %d", ctl.Key, r.f[6], last)
		}
		last = ctl.Sort
		byKey[ctl.Key] = len(out)
		rowOf[ctl.Key] = r
		out = append(out, ctl)
	}
	for _, ctl := range out {
		if ctl.Parent == "" {
			continue
		}
		r := rowOf[ctl.Key]
		i, ok := byKey[ctl.Parent]
		switch {
		case !ok:
			return nil, r.errorf("control %s: parent %q does not exist", ctl.Key, ctl.Parent)
		case out[i].Parent != "":
			return nil, r.errorf("control %s: parent %s is itself an enhancement", ctl.Key, ctl.Parent)
		case out[i].Family != ctl.Family:
			return nil, r.errorf("control %s: family %s differs from its parent's %s", ctl.Key, ctl.Family, out[i].Family)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("catalog: %s lists no control", name)
	}
	return out, nil
}

// loadMappings reads mappings.tsv; both ends of every mapping must exist.
func loadMappings(fsys fs.FS, keys map[string]map[string]Control) ([]Mapping, error) {
	rows, err := readTable(fsys, "mappings.tsv", mappingColumns)
	if err != nil {
		return nil, err
	}
	var out []Mapping
	seen := map[[4]string]bool{}
	for _, r := range rows {
		m := Mapping{FromFramework: r.f[0], FromKey: r.f[1], ToFramework: r.f[2], ToKey: r.f[3], Source: r.f[4]}
		if m.Source == "" {
			return nil, r.errorf("mapping needs a source")
		}
		if m.FromFramework == m.ToFramework {
			return nil, r.errorf("mapping within one framework (%s)", m.FromFramework)
		}
		for _, end := range [][2]string{{m.FromFramework, m.FromKey}, {m.ToFramework, m.ToKey}} {
			if _, ok := keys[end[0]][end[1]]; !ok {
				return nil, r.errorf("mapping names unknown control %s:%s", end[0], end[1])
			}
		}
		k := [4]string{m.FromFramework, m.FromKey, m.ToFramework, m.ToKey}
		if seen[k] {
			return nil, r.errorf("duplicate mapping %s:%s -> %s:%s", k[0], k[1], k[2], k[3])
		}
		seen[k] = true
		out = append(out, m)
	}
	return out, nil
}

// readVersion returns the first line of VERSION that is neither blank nor a
// '#' comment; the comments there record the bump rule.
func readVersion(fsys fs.FS) (string, error) {
	b, err := fs.ReadFile(fsys, "VERSION")
	if err != nil {
		return "", fmt.Errorf("catalog: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") {
			return line, nil
		}
	}
	return "", errors.New("catalog: VERSION holds no version")
}

// row is one data line of a table, kept with its position for error messages.
type row struct {
	file string
	line int
	f    []string
}

func (r row) errorf(format string, args ...any) error {
	return fmt.Errorf("catalog: %s:%d: %s", r.file, r.line, fmt.Sprintf(format, args...))
}

// readTable reads a tab-separated table: '#' lines are comments, the first
// other line is the header and must equal columns, and every row has exactly
// that many fields. A plain split (rather than encoding/csv) because titles
// may hold quotes and the tables never quote.
func readTable(fsys fs.FS, name string, columns []string) ([]row, error) {
	b, err := fs.ReadFile(fsys, name)
	if err != nil {
		return nil, fmt.Errorf("catalog: %w", err)
	}
	var rows []row
	header := false
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSuffix(line, "\r")
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Split(line, "\t")
		if !header {
			if !slices.Equal(fields, columns) {
				return nil, fmt.Errorf("catalog: %s:%d: header %q, want %q", name, i+1, fields, columns)
			}
			header = true
			continue
		}
		if len(fields) != len(columns) {
			return nil, fmt.Errorf("catalog: %s:%d: %d fields, want %d", name, i+1, len(fields), len(columns))
		}
		rows = append(rows, row{file: name, line: i + 1, f: fields})
	}
	if !header {
		return nil, fmt.Errorf("catalog: %s has no header", name)
	}
	return rows, nil
}
