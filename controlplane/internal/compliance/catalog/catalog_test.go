package catalog

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func loadCatalog(t *testing.T) *Catalog {
	t.Helper()
	c, err := Load()
	require.NoError(t, err)
	return c
}

// controlsOf returns a framework's controls by key.
func controlsOf(c *Catalog, framework string) map[string]Control {
	out := map[string]Control{}
	for _, ctl := range c.Controls {
		if ctl.Framework == framework {
			out[ctl.Key] = ctl
		}
	}
	return out
}

// familyCounts counts a framework's controls per family.
func familyCounts(c *Catalog, framework string) map[string]int {
	out := map[string]int{}
	for _, f := range c.Families {
		if f.Framework == framework {
			out[f.ID] = 0
		}
	}
	for _, ctl := range c.Controls {
		if ctl.Framework == framework {
			out[ctl.Family]++
		}
	}
	return out
}

func TestVersion(t *testing.T) {
	assert.Regexp(t, regexp.MustCompile(`^\d{4}\.(0[1-9]|1[0-2])\.[1-9]\d*$`), Version())
	assert.Equal(t, Version(), loadCatalog(t).Version)
}

func TestFrameworks(t *testing.T) {
	c := loadCatalog(t)
	var ids []string
	for _, fw := range c.Frameworks {
		ids = append(ids, fw.ID)
		assert.NotEmpty(t, fw.URL, fw.ID)
		assert.NotEmpty(t, fw.License, fw.ID)
	}
	assert.Equal(t, []string{"nist-800-53-r5", "cis-v8", "soc2-2017", "iso27001-2022"}, ids)
}

// The totals NIST states for SP 800-53 Rev. 5.0.1 and its baselines.
func TestNISTTotals(t *testing.T) {
	c := loadCatalog(t)
	ctls := controlsOf(c, NIST)

	assert.Len(t, familyCounts(c, NIST), 20, "families")
	var base, enhancements, withdrawn int
	inBaseline := map[string]int{}     // every id, base or enhancement
	baseInBaseline := map[string]int{} // base controls only
	for _, ctl := range ctls {
		if ctl.Parent == "" {
			base++
		} else {
			enhancements++
		}
		if ctl.Withdrawn {
			withdrawn++
			assert.Empty(t, ctl.Baselines, "withdrawn %s is in a baseline", ctl.Label)
		}
		for _, b := range ctl.Baselines {
			inBaseline[b]++
			if ctl.Parent == "" {
				baseInBaseline[b]++
			}
		}
	}
	assert.Equal(t, 322, base, "base controls")
	assert.Equal(t, 867, enhancements, "enhancements")
	assert.Equal(t, 182, withdrawn, "withdrawn, base or enhancement")

	// NIST's published baseline sizes (149/287/370) count base controls and
	// enhancements together: they are the number of ids in each resolved
	// baseline. The PRIVACY baseline resolves to 102 ids.
	assert.Equal(t, map[string]int{"low": 149, "moderate": 287, "high": 370, "privacy": 102}, inBaseline)
	assert.Equal(t, map[string]int{"low": 131, "moderate": 177, "high": 188, "privacy": 81}, baseInBaseline)

	// LOW within MODERATE within HIGH, as NIST builds them.
	for _, ctl := range ctls {
		if slices.Contains(ctl.Baselines, "low") {
			assert.Contains(t, ctl.Baselines, "moderate", ctl.Label)
		}
		if slices.Contains(ctl.Baselines, "moderate") {
			assert.Contains(t, ctl.Baselines, "high", ctl.Label)
		}
	}
}

// The controls Edgeward evaluates, as NIST labels and titles them.
func TestNISTEvaluatedControls(t *testing.T) {
	ctls := controlsOf(loadCatalog(t), NIST)
	for _, tc := range []struct {
		key, label, parent, title string
		baselines                 []string
	}{
		{"cm-8", "CM-8", "", "System Component Inventory", []string{"low", "moderate", "high"}},
		{"cm-8.3", "CM-8(3)", "cm-8", "Automated Unauthorized Component Detection", []string{"moderate", "high"}},
		{"ia-3", "IA-3", "", "Device Identification and Authentication", []string{"moderate", "high"}},
		{"au-2", "AU-2", "", "Event Logging", []string{"low", "moderate", "high", "privacy"}},
		{"au-9", "AU-9", "", "Protection of Audit Information", []string{"low", "moderate", "high"}},
		{"au-12", "AU-12", "", "Audit Record Generation", []string{"low", "moderate", "high"}},
	} {
		ctl, ok := ctls[tc.key]
		require.True(t, ok, tc.key)
		assert.Equal(t, tc.label, ctl.Label)
		assert.Equal(t, tc.parent, ctl.Parent)
		assert.Equal(t, tc.title, ctl.Title)
		assert.Equal(t, tc.baselines, ctl.Baselines)
		assert.Equal(t, strings.ToUpper(strings.SplitN(tc.key, "-", 2)[0]), ctl.Family)
		assert.False(t, ctl.Withdrawn)
	}
	assert.True(t, ctls["ac-2.10"].Withdrawn, "AC-2(10) is withdrawn in Rev. 5")
}

func TestControlIDAndURL(t *testing.T) {
	ctls := controlsOf(loadCatalog(t), NIST)
	const cprt = "https://csrc.nist.gov/projects/cprt/catalog#/cprt/framework/version/SP_800_53_5_1_1/home?element="
	assert.Equal(t, "nist-800-53-r5:ac-2.1", ctls["ac-2.1"].ID())
	assert.Equal(t, cprt+"AC-02(01)", ctls["ac-2.1"].URL())
	assert.Equal(t, cprt+"CM-08(03)", ctls["cm-8.3"].URL())
	assert.Equal(t, cprt+"AU-12", ctls["au-12"].URL())
	assert.Equal(t, cprt+"SC-07(29)", ctls["sc-7.29"].URL())

	for _, ctl := range loadCatalog(t).Controls {
		if ctl.Framework != NIST {
			assert.Empty(t, ctl.URL(), ctl.ID())
			continue
		}
		assert.Regexp(t, `element=[A-Z]{2}-\d{2}(\(\d{2}\))?$`, ctl.URL(), ctl.ID())
	}
}

func TestCISTotals(t *testing.T) {
	c := loadCatalog(t)
	ctls := controlsOf(c, "cis-v8")
	assert.Len(t, ctls, 153, "safeguards")
	assert.Equal(t, map[string]int{
		"1": 5, "2": 7, "3": 14, "4": 12, "5": 6, "6": 8, "7": 7, "8": 12, "9": 7,
		"10": 7, "11": 5, "12": 8, "13": 11, "14": 9, "15": 7, "16": 14, "17": 9, "18": 5,
	}, familyCounts(c, "cis-v8"), "safeguards per Control")

	groups := map[string]int{}
	for _, ctl := range ctls {
		assert.Equal(t, ctl.Key, ctl.Label)
		assert.True(t, strings.HasPrefix(ctl.Key, ctl.Family+"."), ctl.Key)
		assert.Empty(t, ctl.Parent)
		// IG1 within IG2 within IG3: a safeguard lists every group it is in.
		switch {
		case slices.Contains(ctl.Baselines, "ig1"):
			assert.Equal(t, []string{"ig1", "ig2", "ig3"}, ctl.Baselines, ctl.Key)
		case slices.Contains(ctl.Baselines, "ig2"):
			assert.Equal(t, []string{"ig2", "ig3"}, ctl.Baselines, ctl.Key)
		default:
			assert.Equal(t, []string{"ig3"}, ctl.Baselines, ctl.Key)
		}
		for _, g := range ctl.Baselines {
			groups[g]++
		}
	}
	assert.Equal(t, map[string]int{"ig1": 56, "ig2": 130, "ig3": 153}, groups)
	for _, key := range []string{"1.1", "1.2", "8.2", "8.5", "8.11"} {
		assert.Contains(t, ctls, key)
	}
	assert.Equal(t, []string{"ig1", "ig2", "ig3"}, ctls["1.2"].Baselines)
	assert.Equal(t, []string{"ig2", "ig3"}, ctls["8.9"].Baselines)
}

func TestSOC2Totals(t *testing.T) {
	c := loadCatalog(t)
	ctls := controlsOf(c, "soc2-2017")
	assert.Len(t, ctls, 61, "criteria")
	assert.Equal(t, map[string]int{
		"CC1": 5, "CC2": 3, "CC3": 4, "CC4": 2, "CC5": 3, "CC6": 8, "CC7": 5, "CC8": 1, "CC9": 2,
		"A1": 3, "C1": 2, "PI1": 5,
		"P1": 1, "P2": 1, "P3": 2, "P4": 3, "P5": 2, "P6": 7, "P7": 1, "P8": 1,
	}, familyCounts(c, "soc2-2017"))
	for _, ctl := range ctls {
		assert.Equal(t, strings.ToLower(ctl.Label), ctl.Key)
		assert.True(t, strings.HasPrefix(ctl.Label, ctl.Family+"."), ctl.Label)
	}
	assert.Equal(t, "CC6.1", ctls["cc6.1"].Label)
	assert.Equal(t, "CC7.2", ctls["cc7.2"].Label)
}

func TestISO27001Totals(t *testing.T) {
	c := loadCatalog(t)
	ctls := controlsOf(c, "iso27001-2022")
	assert.Len(t, ctls, 93, "Annex A controls")
	assert.Equal(t, map[string]int{"5": 37, "6": 8, "7": 14, "8": 34}, familyCounts(c, "iso27001-2022"))
	for _, ctl := range ctls {
		assert.Equal(t, "a."+strings.TrimPrefix(ctl.Label, "A."), ctl.Key)
		assert.True(t, strings.HasPrefix(ctl.Key, "a."+ctl.Family+"."), ctl.Key)
	}
	assert.Equal(t, "A.5.9", ctls["a.5.9"].Label)
	assert.Equal(t, "A.8.15", ctls["a.8.15"].Label)
}

func TestMappings(t *testing.T) {
	c := loadCatalog(t)
	ids := map[string]bool{}
	for _, ctl := range c.Controls {
		require.False(t, ids[ctl.ID()], "duplicate control id %s", ctl.ID())
		ids[ctl.ID()] = true
	}
	sources := map[string]int{}
	pairs := map[string]bool{}
	for _, m := range c.Mappings {
		from, to := m.FromFramework+":"+m.FromKey, m.ToFramework+":"+m.ToKey
		assert.True(t, ids[from], "mapping from unknown %s", from)
		assert.True(t, ids[to], "mapping to unknown %s", to)
		pairs[from+" "+to] = true
		sources[m.Source]++
	}
	// Counterparts of the controls Edgeward evaluates.
	for _, p := range []string{
		"cis-v8:1.1 nist-800-53-r5:cm-8",
		"cis-v8:1.2 nist-800-53-r5:cm-8.3",
		"cis-v8:8.2 nist-800-53-r5:au-2",
		"cis-v8:8.2 nist-800-53-r5:au-12",
		"nist-800-53-r5:cm-8 iso27001-2022:a.5.9",
		"nist-800-53-r5:au-2 iso27001-2022:a.8.15",
		"nist-800-53-r5:au-9 iso27001-2022:a.8.15",
		"nist-800-53-r5:au-12 iso27001-2022:a.8.15",
		"nist-800-53-r5:si-4 iso27001-2022:a.8.16",
	} {
		assert.True(t, pairs[p], "missing mapping %s", p)
	}
	assert.Equal(t, map[string]int{
		"CIS Controls v8 Mapping to NIST SP 800-53 Rev. 5 (CIS)":                      9,
		"NIST SP 800-53 Rev. 5 to ISO/IEC 27001:2022 mapping (NIST OLIR, 2023-10-12)": 66,
	}, sources)
}

func TestCatalogOrder(t *testing.T) {
	c := loadCatalog(t)
	fwIndex := map[string]int{}
	for i, fw := range c.Frameworks {
		fwIndex[fw.ID] = i
	}
	for i := 1; i < len(c.Controls); i++ {
		prev, cur := c.Controls[i-1], c.Controls[i]
		if prev.Framework == cur.Framework {
			assert.Less(t, prev.Sort, cur.Sort, cur.ID())
		} else {
			assert.Less(t, fwIndex[prev.Framework], fwIndex[cur.Framework], cur.ID())
		}
	}
	assert.Equal(t, "nist-800-53-r5:ac-1", c.Controls[0].ID())
}

// Load returns a fresh catalog each time, so one caller's edits cannot leak
// into another's.
func TestLoadReturnsIndependentCopies(t *testing.T) {
	a, b := loadCatalog(t), loadCatalog(t)
	a.Controls[0].Title = "changed"
	a.Controls[1].Baselines[0] = "changed"
	assert.NotEqual(t, "changed", b.Controls[0].Title)
	assert.NotEqual(t, "changed", b.Controls[1].Baselines[0])
}

// validFS is a small, correct data directory; each bad case below breaks one
// thing in it.
func validFS() fstest.MapFS {
	const hdr = "key\tlabel\tfamily\tparent\twithdrawn\tbaselines\tsort\ttitle\n"
	return fstest.MapFS{
		"VERSION":        {Data: []byte("# bump on any change\n2026.11.1\n")},
		"frameworks.tsv": {Data: []byte("id\tname\tversion\tpublisher\turl\tlicense\na\tA\t1\tP\thttps://a\tfree\nb\tB\t1\tP\t\t\n")},
		"a-families.tsv": {Data: []byte("# comment\nid\ttitle\nF\tFamily\n")},
		"a.tsv":          {Data: []byte(hdr + "f-1\tF-1\tF\t\tfalse\tlow\t1\tOne\nf-1.1\tF-1(1)\tF\tf-1\ttrue\t\t2\tOne \"quoted\"\n")},
		"b-families.tsv": {Data: []byte("id\ttitle\nG\tGroup\n")},
		"b.tsv":          {Data: []byte(hdr + "g.1\tG.1\tG\t\tfalse\tig1,ig2\t1\tGee\n")},
		"mappings.tsv":   {Data: []byte("from_framework\tfrom_key\tto_framework\tto_key\tsource\nb\tg.1\ta\tf-1\tSome mapping\n")},
	}
}

func TestLoadValidFS(t *testing.T) {
	c, err := load(validFS())
	require.NoError(t, err)
	assert.Equal(t, "2026.11.1", c.Version)
	require.Len(t, c.Controls, 3)
	assert.Equal(t, Control{Framework: "a", Key: "f-1.1", Label: "F-1(1)", Title: `One "quoted"`, Family: "F",
		Parent: "f-1", Withdrawn: true, Sort: 2}, c.Controls[1])
	assert.Equal(t, []string{"ig1", "ig2"}, c.Controls[2].Baselines)
	assert.Equal(t, []Mapping{{"b", "g.1", "a", "f-1", "Some mapping"}}, c.Mappings)
}

func TestLoadRejectsBadData(t *testing.T) {
	const hdr = "key\tlabel\tfamily\tparent\twithdrawn\tbaselines\tsort\ttitle\n"
	for _, tc := range []struct {
		name, file, data, want string
	}{
		{"duplicate key", "a.tsv", hdr + "f-1\tF-1\tF\t\tfalse\t\t1\tOne\nf-1\tF-1\tF\t\tfalse\t\t2\tAgain\n", `a.tsv:3: duplicate control "f-1"`},
		{"missing parent", "a.tsv", hdr + "f-1.1\tF-1(1)\tF\tf-1\tfalse\t\t1\tOne\n", `parent "f-1" does not exist`},
		{"unknown family", "a.tsv", hdr + "f-1\tF-1\tX\t\tfalse\t\t1\tOne\n", `unknown family "X"`},
		{"bad withdrawn", "a.tsv", hdr + "f-1\tF-1\tF\t\tyes\t\t1\tOne\n", "withdrawn must be true or false"},
		{"sort out of order", "a.tsv", hdr + "f-1\tF-1\tF\t\tfalse\t\t2\tOne\nf-2\tF-2\tF\t\tfalse\t\t2\tTwo\n", "sort \"2\" must be an integer above"},
		{"repeated baseline", "a.tsv", hdr + "f-1\tF-1\tF\t\tfalse\tlow,low\t1\tOne\n", "repeated baseline"},
		{"short row", "a.tsv", hdr + "f-1\tF-1\tF\n", "a.tsv:2: 3 fields, want 8"},
		{"wrong header", "a.tsv", "key\tlabel\n", "a.tsv:1: header"},
		{"key with colon", "a.tsv", hdr + "f:1\tF-1\tF\t\tfalse\t\t1\tOne\n", "has a colon or space"},
		{"duplicate family", "a-families.tsv", "id\ttitle\nF\tOne\nF\tTwo\n", `duplicate family "F"`},
		{"duplicate framework", "frameworks.tsv", "id\tname\tversion\tpublisher\turl\tlicense\na\tA\t1\tP\t\t\na\tA\t1\tP\t\t\n", `duplicate framework "a"`},
		{"unmapped framework file", "c.tsv", hdr, "c.tsv belongs to no framework"},
		{"mapping to unknown control", "mappings.tsv", "from_framework\tfrom_key\tto_framework\tto_key\tsource\nb\tg.1\ta\tf-9\tX\n", "unknown control a:f-9"},
		{"mapping without source", "mappings.tsv", "from_framework\tfrom_key\tto_framework\tto_key\tsource\nb\tg.1\ta\tf-1\t\n", "mapping needs a source"},
		{"no version", "VERSION", "# only a comment\n", "VERSION holds no version"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fsys := validFS()
			fsys[tc.file] = &fstest.MapFile{Data: []byte(tc.data)}
			_, err := load(fsys)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	t.Run("missing controls file", func(t *testing.T) {
		fsys := validFS()
		delete(fsys, "b.tsv")
		_, err := load(fsys)
		require.ErrorIs(t, err, fs.ErrNotExist)
	})
}

// The NIST tables must be exactly what gen makes from NIST's OSCAL files, so
// nobody edits them by hand. Set EDGEWARD_OSCAL_DIR to point elsewhere.
func TestNISTTablesAreGenerated(t *testing.T) {
	oscal := os.Getenv("EDGEWARD_OSCAL_DIR")
	if oscal == "" {
		// From this package up to the directory holding the repository.
		oscal = filepath.Join("..", "..", "..", "..", "..", "shared", "reference", "nist-sp800-53-rev5")
	}
	if _, err := os.Stat(filepath.Join(oscal, "catalog.json")); err != nil {
		t.Skipf("NIST OSCAL files not found at %s (set EDGEWARD_OSCAL_DIR): cannot check that data/nist-800-53-r5*.tsv are generated", oscal)
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command on PATH to run ./gen")
	}

	if abs, err := filepath.Abs(oscal); err == nil {
		oscal = abs
	}
	dir := t.TempDir()
	cmd := exec.Command(goTool, "run", "./gen", "-oscal", oscal, "-out", filepath.Join(dir, "nist-800-53-r5.tsv"))
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "go run ./gen: %s", out)

	for _, name := range []string{"nist-800-53-r5.tsv", "nist-800-53-r5-families.tsv"} {
		want, err := os.ReadFile(filepath.Join(dir, name))
		require.NoError(t, err)
		got, err := fs.ReadFile(data, name)
		require.NoError(t, err)
		// Not assert.Equal: a diff of two 1,200-line tables helps nobody.
		if string(got) != string(want) {
			t.Errorf("data/%s differs from gen's output; regenerate it with\n"+
				"  go run ./internal/compliance/catalog/gen -oscal %s -out internal/compliance/catalog/data/nist-800-53-r5.tsv\n"+
				"and bump data/VERSION", name, oscal)
		}
	}
}
