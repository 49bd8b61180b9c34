-- billing_audit.credential_versions: which version of each secret and key the engine has seen, so that a rotation
-- (Secrets Manager's rotation Lambda, an operator's new key version) becomes one audit entry (PCI DSS v4.0
-- 10.2.1.2 and 10.2.1.5: changes to authentication credentials) even though it happens outside the engine.
--
-- The audit checkpoint function looks at the current version of every watched credential on each run; inserting
-- an unseen (credential, version) pair and its audit entry commit together, so a version is announced exactly once
-- whatever the number of runs or concurrent workers. Append-only like the rest of the trail; cross-tenant like it.

create table billing_audit.credential_versions (
    credential  text        not null,
    version_id  text        not null,
    observed_at timestamptz not null default clock_timestamp(),

    constraint credential_versions_pkey primary key (credential, version_id),
    constraint credential_versions_text_bounded check (length(credential) <= 512 and length(version_id) <= 128)
);

create trigger credential_versions_append_only
    before update or delete on billing_audit.credential_versions
    for each row execute function billing.reject_append_only_change();

create trigger credential_versions_no_truncate
    before truncate on billing_audit.credential_versions
    for each statement execute function billing.reject_append_only_change();

select billing.grant_dml('billing_audit.credential_versions', 'billing_worker', 'select, insert');
select billing.grant_dml('billing_audit.credential_versions', 'billing_auditor', 'select');
