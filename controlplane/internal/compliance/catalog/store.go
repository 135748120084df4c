package catalog

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// storeLockKey serializes concurrent catalog loads.
const storeLockKey = 7301772463

// Store brings the database's catalog tables to c, in tx (the migration
// owner's: the runtime role may only read them). It does nothing when the
// stored version is c's, and reports whether it wrote. Controls that left
// the catalog are removed; tenants' statuses of them stay but no longer
// show, as their control does not exist.
func Store(ctx context.Context, tx pgx.Tx, c *Catalog) (bool, error) {
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", storeLockKey); err != nil {
		return false, fmt.Errorf("catalog: lock: %w", err)
	}
	var stored string
	err := tx.QueryRow(ctx, "SELECT version FROM compliance_catalog").Scan(&stored)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return false, fmt.Errorf("catalog: read version: %w", err)
	}
	if stored != "" && !newer(c.Version, stored) {
		// The same version, or an older binary's migrate during a rolling
		// deploy or a rollback: the newer catalog stays.
		return false, nil
	}
	var (
		fwID, fwName, fwVersion, fwPublisher, fwURL, fwLicense []string
		famFw, famID, famTitle                                 []string
		ids, fws, keys, labels, titles, families, urls         []string
		parents                                                []*string
		withdrawn                                              []bool
		baselines                                              [][]string
		sorts                                                  []int
		fromIDs, toIDs, sources                                []string
	)
	for _, f := range c.Frameworks {
		fwID, fwName, fwVersion = append(fwID, f.ID), append(fwName, f.Name), append(fwVersion, f.Version)
		fwPublisher, fwURL, fwLicense = append(fwPublisher, f.Publisher), append(fwURL, f.URL), append(fwLicense, f.License)
	}
	for _, f := range c.Families {
		famFw, famID, famTitle = append(famFw, f.Framework), append(famID, f.ID), append(famTitle, f.Title)
	}
	for _, ctl := range c.Controls {
		ids, fws, keys, labels = append(ids, ctl.ID()), append(fws, ctl.Framework), append(keys, ctl.Key), append(labels, ctl.Label)
		titles, families, urls = append(titles, ctl.Title), append(families, ctl.Family), append(urls, ctl.URL())
		var parent *string
		if ctl.Parent != "" {
			p := ctl.Framework + ":" + ctl.Parent
			parent = &p
		}
		parents, withdrawn, sorts = append(parents, parent), append(withdrawn, ctl.Withdrawn), append(sorts, ctl.Sort)
		b := ctl.Baselines
		if b == nil {
			b = []string{}
		}
		baselines = append(baselines, b)
	}
	for _, m := range c.Mappings {
		fromIDs, toIDs, sources = append(fromIDs, m.FromFramework+":"+m.FromKey), append(toIDs, m.ToFramework+":"+m.ToKey), append(sources, m.Source)
	}
	steps := []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO compliance_frameworks (id, name, version, publisher, url, license)
			SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
			ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, version = EXCLUDED.version, publisher = EXCLUDED.publisher,
			url = EXCLUDED.url, license = EXCLUDED.license`, []any{fwID, fwName, fwVersion, fwPublisher, fwURL, fwLicense}},
		{`DELETE FROM compliance_families`, nil},
		{`INSERT INTO compliance_families (framework_id, id, title) SELECT * FROM unnest($1::text[], $2::text[], $3::text[])`,
			[]any{famFw, famID, famTitle}},
		{`DELETE FROM compliance_controls WHERE NOT (id = ANY($1))`, []any{ids}},
		// Baselines are a text[] each: passed as one JSON document, since
		// unnest cannot take an array of uneven arrays.
		{`INSERT INTO compliance_controls (id, framework_id, key, label, title, family, parent_id, withdrawn, baselines, sort, url)
			SELECT u.id, u.fw, u.key, u.label, u.title, u.family, u.parent, u.withdrawn,
			       ARRAY(SELECT jsonb_array_elements_text(($11::jsonb) -> (u.ord::int - 1))), u.sort, u.url
			  FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bool[], $9::int[], $10::text[])
			       WITH ORDINALITY AS u(id, fw, key, label, title, family, parent, withdrawn, sort, url, ord)
			ON CONFLICT (id) DO UPDATE SET framework_id = EXCLUDED.framework_id, key = EXCLUDED.key, label = EXCLUDED.label,
			title = EXCLUDED.title, family = EXCLUDED.family, parent_id = EXCLUDED.parent_id, withdrawn = EXCLUDED.withdrawn,
			baselines = EXCLUDED.baselines, sort = EXCLUDED.sort, url = EXCLUDED.url`,
			[]any{ids, fws, keys, labels, titles, families, parents, withdrawn, sorts, urls, baselines}},
		{`DELETE FROM compliance_frameworks WHERE NOT (id = ANY($1))`, []any{fwID}},
		{`DELETE FROM compliance_mappings`, nil},
		{`INSERT INTO compliance_mappings (from_id, to_id, source) SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
			ON CONFLICT DO NOTHING`, []any{fromIDs, toIDs, sources}},
		{`INSERT INTO compliance_catalog (version) VALUES ($1)
			ON CONFLICT (singleton) DO UPDATE SET version = EXCLUDED.version, loaded_at = now()`, []any{c.Version}},
	}
	for _, s := range steps {
		if _, err := tx.Exec(ctx, s.sql, s.args...); err != nil {
			return false, fmt.Errorf("catalog: store: %w", err)
		}
	}
	return true, nil
}

// newer reports whether version a is later than b. Versions are dotted
// numbers (2026.11.1); a part that is not a number compares as text.
func newer(a, b string) bool {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < max(len(pa), len(pb)); i++ {
		var x, y string
		if i < len(pa) {
			x = pa[i]
		}
		if i < len(pb) {
			y = pb[i]
		}
		if x == y {
			continue
		}
		nx, ex := strconv.Atoi(x)
		ny, ey := strconv.Atoi(y)
		if ex == nil && ey == nil {
			return nx > ny
		}
		return x > y
	}
	return false
}
