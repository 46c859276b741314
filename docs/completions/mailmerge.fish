# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_mailmerge_global_optspecs
    string join \n h/help V/version
end

function __fish_mailmerge_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_mailmerge_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_mailmerge_using_subcommand
    set -l cmd (__fish_mailmerge_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c mailmerge -n "__fish_mailmerge_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mailmerge -n "__fish_mailmerge_needs_command" -s V -l version -d 'Print version'
complete -c mailmerge -n "__fish_mailmerge_needs_command" -f -a "run" -d 'Render and deliver every row of RECIPIENTS with TEMPLATE; write a results CSV'
complete -c mailmerge -n "__fish_mailmerge_needs_command" -f -a "check" -d 'Validate the list, render every message and resolve every domain; print the plan and send nothing. Exits 1 if any row could not be sent. Takes the same options as `run`'
complete -c mailmerge -n "__fish_mailmerge_needs_command" -f -a "check-sender" -d 'Check the sender domain\'s DNS (SPF, DKIM, DMARC); print what to publish'
complete -c mailmerge -n "__fish_mailmerge_needs_command" -f -a "suppress" -d 'Manage the suppression list: addresses no campaign sends to (docs/list-hygiene.md)'
complete -c mailmerge -n "__fish_mailmerge_needs_command" -f -a "bounces" -d 'Read late bounces and complaints (Maildir folders, mbox or .eml files, an IMAP mailbox); mark their rows bounced in the campaign\'s results CSV and suppress the addresses. --dry-run only says what it would do'
complete -c mailmerge -n "__fish_mailmerge_needs_command" -f -a "senders" -d 'What is remembered per provider and source IP (learnt limits, suspensions, today\'s counts, warm-up day); clear an entry with --clear'
complete -c mailmerge -n "__fish_mailmerge_needs_command" -f -a "merge-results" -d 'Join the results of `run --shard 0/N` … `N-1/N` into one results CSV in the list\'s order. Exits 2, naming the rows, unless every row of LIST appears exactly once, with LIST\'s address and values, in LIST\'s order within each input'
complete -c mailmerge -n "__fish_mailmerge_needs_command" -f -a "report" -d 'Write an HTML report of a results CSV (or of a sharded campaign\'s results): totals, providers, domains, why not delivered, a timeline, TLS. One self-contained file'
complete -c mailmerge -n "__fish_mailmerge_needs_command" -f -a "generate" -d 'Write the man pages or print shell completions (generated from these definitions)'
complete -c mailmerge -n "__fish_mailmerge_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l results -d 'Results CSV [default: <RECIPIENTS stem>.results.csv beside the input]' -r -F
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l dns -d 'Use this DNS server (IP:PORT) instead of the system resolver (/etc/resolv.conf)' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l dns-timeout -d 'DNS query timeout' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l from -d 'Envelope sender (MAIL FROM) [default: the address in the rendered From header]' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l email-column -d 'Column holding the recipient address' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l max-field-size -d 'Largest CSV field accepted (bytes, or with K, M, G); a row with a longer one is `invalid`' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l helo -d 'Name sent in EHLO [default: this host\'s FQDN; mailmerge.sandbox.test with --sandbox]' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l smtp-port -d 'TCP port used when connecting to MX hosts' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l connections-per-site -d 'Simultaneous connections at most per destination site (domains sharing MX hosts)' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l max-connections -d 'Simultaneous connections at most in total' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l messages-per-connection -d 'Messages sent over one connection before it is closed and a new one opened' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l retry -d 'Waits before the 2nd, 3rd, 4th… attempt after a transient failure (ms, s, m, h; `none` never retries) [1s with --sandbox]' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l deadline -d 'Wall-clock budget of the whole run; what is not delivered by then is `deferred`' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l tls -d 'STARTTLS: opportunistic (any certificate, plaintext fallback), required (verified certificate matching the MX name, else deferred) or disabled' -r -f -a "opportunistic\t'Use TLS whenever offered, accept any certificate; fall back to plaintext when the handshake fails'
required\t'Verified TLS or no delivery (the message is deferred)'
disabled\t'Never STARTTLS'"
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l rate-per-site -d 'Messages at most per site and period, spaced evenly (e.g. 100/min, 5/s)' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l source-ip -d 'Local address new connections leave from, with the EHLO name its PTR record gives [default HELO: --helo]; repeat for a pool (each new connection takes the least-used address; one that cannot be bound is skipped for the run). See docs/scaling.md' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l daily-cap -d 'Messages at most per provider per day (UTC), counted across runs; the rest end `deferred` (step `cap`) and a later day\'s run sends them' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l warmup -d 'Warm-up schedule, DAY=CAP,... (day 1 = the first day of sending): the daily cap per provider while the sending IP warms up (the config\'s `[warmup]` table)' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l provider -d 'A mailbox provider, changed or added (the config\'s `[provider.NAME]` tables), as a TOML inline table\'s inside: `name = "acme", mx_suffixes = ["mx.acme.example"], connections = 2`' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l backoff -d 'A backoff rule (the config\'s `[[backoff]]` tables), as a TOML inline table\'s inside: `pattern = "[TS03]", provider = "yahoo", rate = "10/min", duration = "30m"`' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l smtp-timeout -d 'Bound every SMTP phase by this timeout [default: RFC 5321 §4.5.3.2 values, 30 s connect]' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l connect-timeout -d 'TCP connect timeout per MX address (applied after --smtp-timeout) [default: 30s]' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l timeout -d 'One phase\'s timeout, PHASE=DURATION (connect, greeting, command, mail, rcpt, data, data-block, data-end); may be repeated; applied last' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l tls-policy -d 'Published TLS policies: auto (honor MTA-STS and DANE, else --tls) or opportunistic (--tls everywhere, no policy lookups). See docs/delivery.md#tls-policies' -r -f -a "auto\t'Honor MTA-STS and DANE where a receiver publishes them; `--tls` elsewhere'
opportunistic\t'Ignore published policies: `--tls` everywhere (no policy lookups)'"
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l tls-ca -d 'PEM file of extra trusted root certificates (a private PKI) for verified TLS (MTA-STS, --tls required) and for fetching MTA-STS policies; repeatable' -r -F
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l dnssec-trust-anchor -d 'DNSSEC trust anchor for DANE instead of the IANA root keys: a file of DS or DNSKEY records in zone-file form (a private test root)' -r -F
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l mta-sts-cache -d 'MTA-STS policy cache, kept between runs for each policy\'s max_age [default: $XDG_CACHE_HOME/mailmerge/mta-sts.json, else ~/.cache/...; with --sandbox <--sandbox-dir>.mta-sts.json]' -r -F
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l mta-sts-port -d 'HTTPS port MTA-STS policies are fetched from (tests)' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l attachments-dir -d 'Folder that `Attachment:` files are read from; a value naming anything outside it (absolute, `..`, a symlink out) makes the row invalid [default: the template\'s folder]' -r -f -a "(__fish_complete_directories)"
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l max-message-size -d 'Largest message built, attachments included (bytes, or with K, M, G); a row whose message is larger is `invalid`' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l out -d 'With --dry-run / check: write every rendered message to DIR as <row>-<address>.eml' -r -f -a "(__fish_complete_directories)"
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l limit -d 'Send at most N messages (a canary); the rest stay `deferred` (step `limit`) and a re-run of the same command continues with the next ones' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l shard -d 'Send (or with check, plan) only shard I of N: the rows whose destination site hashes to I, so each destination stays in one shard. `auto/N` takes I from JOB_COMPLETION_INDEX (Kubernetes Indexed Jobs). Results go to <RECIPIENTS stem>.results.shard-I-of-N.csv unless --results is given; join them with merge-results (docs/scaling.md)' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l report -d 'When the run ends, write an HTML report of its results (docs/results.md#the-html-report) to PATH [default: <results stem>.html beside the results; --sandbox writes it anyway]' -r -F
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l events -d 'Write the run\'s events as JSON Lines to PATH (`-`: standard output, and the summary goes to standard error): every attempt\'s outcome, provider state changes, a summary' -r -F
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l sandbox-dir -d 'Where --sandbox stores received messages' -r -f -a "(__fish_complete_directories)"
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l config -d 'Config file of default options [default: ./mailmerge.toml if present]' -r -F
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l dkim-key -d 'DKIM-sign every message with this PEM private key (RSA 2048+ or Ed25519)' -r -F
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l dkim-selector -d 'DKIM selector: the key is published at <SELECTOR>._domainkey.<DOMAIN>' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l dkim-domain -d 'DKIM signing domain (d=) [default: each message\'s From domain]' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l list-unsubscribe -d 'Add List-Unsubscribe with this URI (templated per row, e.g. https://acme.example/u/{{token}}); repeat for a mailto: URI. An https URI also adds List-Unsubscribe-Post: List-Unsubscribe=One-Click (RFC 8058)' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l suppressions -d 'Suppression list (SQLite; shared safely by runs at once) [default: $XDG_DATA_HOME/mailmerge/suppressions.sqlite, else ~/.local/share/...; with --sandbox <--sandbox-dir>.suppressions.sqlite]' -r -F
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l return-path -d 'Envelope sender (MAIL FROM) with a signed per-row token, so that a late bounce finds its row: e.g. \'bounces+{token}@acme.example\' (needs --verp-key). Overrides --from' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l verp-key -d 'Secret key signing the --return-path tokens (HMAC-SHA256); keep it in the config file or use --verp-key-file' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l verp-key-file -d 'File holding the VERP key (surrounding white space ignored)' -r -F
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l state -d 'The sender\'s memory: suspensions, learnt limits and daily counts per provider and source IP, shared by every run (SQLite) [default: $XDG_DATA_HOME/mailmerge/ senders.sqlite, else ~/.local/share/...; with --sandbox <--sandbox-dir>.senders.sqlite]' -r -F
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l now -d 'Read the wall clock as this RFC 3339 instant at start (tests; days and suspensions)' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l no-private-mx -d 'For domains under public names, never connect to MX addresses in private, loopback, link-local or shared ranges (a domain left with none bounces, 5.4.4)'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l allow-duplicates -d 'Send to repeated addresses too (default: first row only; others are `duplicate`)'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l no-chunking -d 'Never use BDAT (RFC 3030 CHUNKING), even where offered: send every message with DATA (a receiver whose CHUNKING is broken)'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l dry-run -d 'Render, resolve and print the delivery plan without connecting to any MX (= `check`)'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l fresh -d 'Forget earlier runs of this job (empty the journal) and send to every row again'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l template-changed -d 'The template changed since the journal was started (a fix during a campaign): go on with the journal instead of refusing; rows already delivered are not sent again'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l journal-repair -d 'A damaged journal record stops the run (exit 2); with this flag damaged records are skipped and their rows sent again'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l no-received-header -d 'Leave out the `Received:` trace header that records the submission (list file, HELO name, run id and time) at the top of every message'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l raw-csv -d 'Write results cells exactly as they are. By default a cell that a spreadsheet would run as a formula (starting with =, +, -, @, tab or CR) gets a leading apostrophe'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l timings -d 'At the end, print to standard error how long each stage took and when the first SMTP session opened (where start-up time goes)'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l sandbox -d 'Run the whole job against an embedded loopback DNS server and SMTP receiver'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -s q -l quiet -d 'No progress output (errors still go to stderr)'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -l ignore-suppressions -d 'Send to suppressed addresses too (transactional mail: receipts, password resets); hard bounces are still recorded'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand run" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l results -d 'Results CSV [default: <RECIPIENTS stem>.results.csv beside the input]' -r -F
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l dns -d 'Use this DNS server (IP:PORT) instead of the system resolver (/etc/resolv.conf)' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l dns-timeout -d 'DNS query timeout' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l from -d 'Envelope sender (MAIL FROM) [default: the address in the rendered From header]' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l email-column -d 'Column holding the recipient address' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l max-field-size -d 'Largest CSV field accepted (bytes, or with K, M, G); a row with a longer one is `invalid`' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l helo -d 'Name sent in EHLO [default: this host\'s FQDN; mailmerge.sandbox.test with --sandbox]' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l smtp-port -d 'TCP port used when connecting to MX hosts' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l connections-per-site -d 'Simultaneous connections at most per destination site (domains sharing MX hosts)' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l max-connections -d 'Simultaneous connections at most in total' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l messages-per-connection -d 'Messages sent over one connection before it is closed and a new one opened' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l retry -d 'Waits before the 2nd, 3rd, 4th… attempt after a transient failure (ms, s, m, h; `none` never retries) [1s with --sandbox]' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l deadline -d 'Wall-clock budget of the whole run; what is not delivered by then is `deferred`' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l tls -d 'STARTTLS: opportunistic (any certificate, plaintext fallback), required (verified certificate matching the MX name, else deferred) or disabled' -r -f -a "opportunistic\t'Use TLS whenever offered, accept any certificate; fall back to plaintext when the handshake fails'
required\t'Verified TLS or no delivery (the message is deferred)'
disabled\t'Never STARTTLS'"
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l rate-per-site -d 'Messages at most per site and period, spaced evenly (e.g. 100/min, 5/s)' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l source-ip -d 'Local address new connections leave from, with the EHLO name its PTR record gives [default HELO: --helo]; repeat for a pool (each new connection takes the least-used address; one that cannot be bound is skipped for the run). See docs/scaling.md' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l daily-cap -d 'Messages at most per provider per day (UTC), counted across runs; the rest end `deferred` (step `cap`) and a later day\'s run sends them' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l warmup -d 'Warm-up schedule, DAY=CAP,... (day 1 = the first day of sending): the daily cap per provider while the sending IP warms up (the config\'s `[warmup]` table)' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l provider -d 'A mailbox provider, changed or added (the config\'s `[provider.NAME]` tables), as a TOML inline table\'s inside: `name = "acme", mx_suffixes = ["mx.acme.example"], connections = 2`' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l backoff -d 'A backoff rule (the config\'s `[[backoff]]` tables), as a TOML inline table\'s inside: `pattern = "[TS03]", provider = "yahoo", rate = "10/min", duration = "30m"`' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l smtp-timeout -d 'Bound every SMTP phase by this timeout [default: RFC 5321 §4.5.3.2 values, 30 s connect]' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l connect-timeout -d 'TCP connect timeout per MX address (applied after --smtp-timeout) [default: 30s]' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l timeout -d 'One phase\'s timeout, PHASE=DURATION (connect, greeting, command, mail, rcpt, data, data-block, data-end); may be repeated; applied last' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l tls-policy -d 'Published TLS policies: auto (honor MTA-STS and DANE, else --tls) or opportunistic (--tls everywhere, no policy lookups). See docs/delivery.md#tls-policies' -r -f -a "auto\t'Honor MTA-STS and DANE where a receiver publishes them; `--tls` elsewhere'
opportunistic\t'Ignore published policies: `--tls` everywhere (no policy lookups)'"
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l tls-ca -d 'PEM file of extra trusted root certificates (a private PKI) for verified TLS (MTA-STS, --tls required) and for fetching MTA-STS policies; repeatable' -r -F
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l dnssec-trust-anchor -d 'DNSSEC trust anchor for DANE instead of the IANA root keys: a file of DS or DNSKEY records in zone-file form (a private test root)' -r -F
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l mta-sts-cache -d 'MTA-STS policy cache, kept between runs for each policy\'s max_age [default: $XDG_CACHE_HOME/mailmerge/mta-sts.json, else ~/.cache/...; with --sandbox <--sandbox-dir>.mta-sts.json]' -r -F
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l mta-sts-port -d 'HTTPS port MTA-STS policies are fetched from (tests)' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l attachments-dir -d 'Folder that `Attachment:` files are read from; a value naming anything outside it (absolute, `..`, a symlink out) makes the row invalid [default: the template\'s folder]' -r -f -a "(__fish_complete_directories)"
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l max-message-size -d 'Largest message built, attachments included (bytes, or with K, M, G); a row whose message is larger is `invalid`' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l out -d 'With --dry-run / check: write every rendered message to DIR as <row>-<address>.eml' -r -f -a "(__fish_complete_directories)"
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l limit -d 'Send at most N messages (a canary); the rest stay `deferred` (step `limit`) and a re-run of the same command continues with the next ones' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l shard -d 'Send (or with check, plan) only shard I of N: the rows whose destination site hashes to I, so each destination stays in one shard. `auto/N` takes I from JOB_COMPLETION_INDEX (Kubernetes Indexed Jobs). Results go to <RECIPIENTS stem>.results.shard-I-of-N.csv unless --results is given; join them with merge-results (docs/scaling.md)' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l report -d 'When the run ends, write an HTML report of its results (docs/results.md#the-html-report) to PATH [default: <results stem>.html beside the results; --sandbox writes it anyway]' -r -F
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l events -d 'Write the run\'s events as JSON Lines to PATH (`-`: standard output, and the summary goes to standard error): every attempt\'s outcome, provider state changes, a summary' -r -F
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l sandbox-dir -d 'Where --sandbox stores received messages' -r -f -a "(__fish_complete_directories)"
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l config -d 'Config file of default options [default: ./mailmerge.toml if present]' -r -F
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l dkim-key -d 'DKIM-sign every message with this PEM private key (RSA 2048+ or Ed25519)' -r -F
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l dkim-selector -d 'DKIM selector: the key is published at <SELECTOR>._domainkey.<DOMAIN>' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l dkim-domain -d 'DKIM signing domain (d=) [default: each message\'s From domain]' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l list-unsubscribe -d 'Add List-Unsubscribe with this URI (templated per row, e.g. https://acme.example/u/{{token}}); repeat for a mailto: URI. An https URI also adds List-Unsubscribe-Post: List-Unsubscribe=One-Click (RFC 8058)' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l suppressions -d 'Suppression list (SQLite; shared safely by runs at once) [default: $XDG_DATA_HOME/mailmerge/suppressions.sqlite, else ~/.local/share/...; with --sandbox <--sandbox-dir>.suppressions.sqlite]' -r -F
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l return-path -d 'Envelope sender (MAIL FROM) with a signed per-row token, so that a late bounce finds its row: e.g. \'bounces+{token}@acme.example\' (needs --verp-key). Overrides --from' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l verp-key -d 'Secret key signing the --return-path tokens (HMAC-SHA256); keep it in the config file or use --verp-key-file' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l verp-key-file -d 'File holding the VERP key (surrounding white space ignored)' -r -F
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l state -d 'The sender\'s memory: suspensions, learnt limits and daily counts per provider and source IP, shared by every run (SQLite) [default: $XDG_DATA_HOME/mailmerge/ senders.sqlite, else ~/.local/share/...; with --sandbox <--sandbox-dir>.senders.sqlite]' -r -F
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l now -d 'Read the wall clock as this RFC 3339 instant at start (tests; days and suspensions)' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l no-private-mx -d 'For domains under public names, never connect to MX addresses in private, loopback, link-local or shared ranges (a domain left with none bounces, 5.4.4)'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l allow-duplicates -d 'Send to repeated addresses too (default: first row only; others are `duplicate`)'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l no-chunking -d 'Never use BDAT (RFC 3030 CHUNKING), even where offered: send every message with DATA (a receiver whose CHUNKING is broken)'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l dry-run -d 'Render, resolve and print the delivery plan without connecting to any MX (= `check`)'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l fresh -d 'Forget earlier runs of this job (empty the journal) and send to every row again'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l template-changed -d 'The template changed since the journal was started (a fix during a campaign): go on with the journal instead of refusing; rows already delivered are not sent again'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l journal-repair -d 'A damaged journal record stops the run (exit 2); with this flag damaged records are skipped and their rows sent again'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l no-received-header -d 'Leave out the `Received:` trace header that records the submission (list file, HELO name, run id and time) at the top of every message'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l raw-csv -d 'Write results cells exactly as they are. By default a cell that a spreadsheet would run as a formula (starting with =, +, -, @, tab or CR) gets a leading apostrophe'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l timings -d 'At the end, print to standard error how long each stage took and when the first SMTP session opened (where start-up time goes)'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l sandbox -d 'Run the whole job against an embedded loopback DNS server and SMTP receiver'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -s q -l quiet -d 'No progress output (errors still go to stderr)'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -l ignore-suppressions -d 'Send to suppressed addresses too (transactional mail: receipts, password resets); hard bounces are still recorded'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check-sender" -l config -d 'Config file [default: ./mailmerge.toml if present] (uses its dns and dkim-* keys)' -r -F
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check-sender" -l dns -d 'Use this DNS server (IP:PORT) instead of the system resolver' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check-sender" -l dns-timeout -d 'DNS query timeout' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check-sender" -l dkim-selector -d 'DKIM selector to look up at <SELECTOR>._domainkey.<DOMAIN>' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check-sender" -l dkim-key -d 'Private key (PEM) whose public half must be the one published' -r -F
complete -c mailmerge -n "__fish_mailmerge_using_subcommand check-sender" -s h -l help -d 'Print help'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand suppress; and not __fish_seen_subcommand_from list add remove import export help" -l suppressions -d 'Suppression list (SQLite; shared safely by runs at once) [default: $XDG_DATA_HOME/mailmerge/suppressions.sqlite, else ~/.local/share/...; with --sandbox <--sandbox-dir>.suppressions.sqlite]' -r -F
complete -c mailmerge -n "__fish_mailmerge_using_subcommand suppress; and not __fish_seen_subcommand_from list add remove import export help" -l config -d 'Config file [default: ./mailmerge.toml if present] (uses its suppressions key)' -r -F
complete -c mailmerge -n "__fish_mailmerge_using_subcommand suppress; and not __fish_seen_subcommand_from list add remove import export help" -s h -l help -d 'Print help'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand suppress; and not __fish_seen_subcommand_from list add remove import export help" -f -a "list" -d 'Print every entry as CSV (address, reason, cause, campaign, created)'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand suppress; and not __fish_seen_subcommand_from list add remove import export help" -f -a "add" -d 'Suppress addresses, or whole domains written @domain'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand suppress; and not __fish_seen_subcommand_from list add remove import export help" -f -a "remove" -d 'Take addresses (or @domains) off the list'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand suppress; and not __fish_seen_subcommand_from list add remove import export help" -f -a "import" -d 'Add the addresses of a CSV file, e.g. another tool\'s unsubscribe export. A whole domain only on rows whose `kind` column says `domain`; a line that cannot be used is reported with its number and skipped'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand suppress; and not __fish_seen_subcommand_from list add remove import export help" -f -a "export" -d 'Write every entry as CSV to FILE (or stdout when omitted or `-`), formula-like cells defused with a leading apostrophe'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand suppress; and not __fish_seen_subcommand_from list add remove import export help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand suppress; and __fish_seen_subcommand_from list" -l suppressions -d 'Suppression list (SQLite; shared safely by runs at once) [default: $XDG_DATA_HOME/mailmerge/suppressions.sqlite, else ~/.local/share/...; with --sandbox <--sandbox-dir>.suppressions.sqlite]' -r -F
complete -c mailmerge -n "__fish_mailmerge_using_subcommand suppress; and __fish_seen_subcommand_from list" -l config -d 'Config file [default: ./mailmerge.toml if present] (uses its suppressions key)' -r -F
complete -c mailmerge -n "__fish_mailmerge_using_subcommand suppress; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand suppress; and __fish_seen_subcommand_from add" -l reason -d 'Why' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand suppress; and __fish_seen_subcommand_from add" -l note -d 'A note kept with the entry' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand suppress; and __fish_seen_subcommand_from add" -l suppressions -d 'Suppression list (SQLite; shared safely by runs at once) [default: $XDG_DATA_HOME/mailmerge/suppressions.sqlite, else ~/.local/share/...; with --sandbox <--sandbox-dir>.suppressions.sqlite]' -r -F
complete -c mailmerge -n "__fish_mailmerge_using_subcommand suppress; and __fish_seen_subcommand_from add" -l config -d 'Config file [default: ./mailmerge.toml if present] (uses its suppressions key)' -r -F
complete -c mailmerge -n "__fish_mailmerge_using_subcommand suppress; and __fish_seen_subcommand_from add" -s h -l help -d 'Print help'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand suppress; and __fish_seen_subcommand_from remove" -l suppressions -d 'Suppression list (SQLite; shared safely by runs at once) [default: $XDG_DATA_HOME/mailmerge/suppressions.sqlite, else ~/.local/share/...; with --sandbox <--sandbox-dir>.suppressions.sqlite]' -r -F
complete -c mailmerge -n "__fish_mailmerge_using_subcommand suppress; and __fish_seen_subcommand_from remove" -l config -d 'Config file [default: ./mailmerge.toml if present] (uses its suppressions key)' -r -F
complete -c mailmerge -n "__fish_mailmerge_using_subcommand suppress; and __fish_seen_subcommand_from remove" -s h -l help -d 'Print help'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand suppress; and __fish_seen_subcommand_from import" -l column -d 'Column holding the addresses' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand suppress; and __fish_seen_subcommand_from import" -l reason -d 'Reason for rows without a `reason` column' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand suppress; and __fish_seen_subcommand_from import" -l suppressions -d 'Suppression list (SQLite; shared safely by runs at once) [default: $XDG_DATA_HOME/mailmerge/suppressions.sqlite, else ~/.local/share/...; with --sandbox <--sandbox-dir>.suppressions.sqlite]' -r -F
complete -c mailmerge -n "__fish_mailmerge_using_subcommand suppress; and __fish_seen_subcommand_from import" -l config -d 'Config file [default: ./mailmerge.toml if present] (uses its suppressions key)' -r -F
complete -c mailmerge -n "__fish_mailmerge_using_subcommand suppress; and __fish_seen_subcommand_from import" -s h -l help -d 'Print help'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand suppress; and __fish_seen_subcommand_from export" -l suppressions -d 'Suppression list (SQLite; shared safely by runs at once) [default: $XDG_DATA_HOME/mailmerge/suppressions.sqlite, else ~/.local/share/...; with --sandbox <--sandbox-dir>.suppressions.sqlite]' -r -F
complete -c mailmerge -n "__fish_mailmerge_using_subcommand suppress; and __fish_seen_subcommand_from export" -l config -d 'Config file [default: ./mailmerge.toml if present] (uses its suppressions key)' -r -F
complete -c mailmerge -n "__fish_mailmerge_using_subcommand suppress; and __fish_seen_subcommand_from export" -s h -l help -d 'Print help'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand suppress; and __fish_seen_subcommand_from help" -f -a "list" -d 'Print every entry as CSV (address, reason, cause, campaign, created)'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand suppress; and __fish_seen_subcommand_from help" -f -a "add" -d 'Suppress addresses, or whole domains written @domain'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand suppress; and __fish_seen_subcommand_from help" -f -a "remove" -d 'Take addresses (or @domains) off the list'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand suppress; and __fish_seen_subcommand_from help" -f -a "import" -d 'Add the addresses of a CSV file, e.g. another tool\'s unsubscribe export. A whole domain only on rows whose `kind` column says `domain`; a line that cannot be used is reported with its number and skipped'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand suppress; and __fish_seen_subcommand_from help" -f -a "export" -d 'Write every entry as CSV to FILE (or stdout when omitted or `-`), formula-like cells defused with a leading apostrophe'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand suppress; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand bounces" -l max-report-size -d 'Read at most SIZE of each message (bytes, or with K, M, G); the report and the returned message\'s headers are at its top, the rest is skipped' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand bounces" -l imap-password-env -d 'Environment variable holding the IMAP password' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand bounces" -l imap-password -d 'The IMAP password, from the config file only (`imap-password = "..."`); refused on the command line' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand bounces" -l imap-move-to -d 'Move each processed IMAP message to FOLDER (created if missing) instead of remembering the highest UID read' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand bounces" -l tls-ca -d 'PEM file of extra trusted root certificates for the IMAP server (a private CA); repeatable' -r -F
complete -c mailmerge -n "__fish_mailmerge_using_subcommand bounces" -l suppressions -d 'Suppression list (SQLite; shared safely by runs at once) [default: $XDG_DATA_HOME/mailmerge/suppressions.sqlite, else ~/.local/share/...; with --sandbox <--sandbox-dir>.suppressions.sqlite]' -r -F
complete -c mailmerge -n "__fish_mailmerge_using_subcommand bounces" -l verp-key -d 'Secret key signing the --return-path tokens (HMAC-SHA256); keep it in the config file or use --verp-key-file' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand bounces" -l verp-key-file -d 'File holding the VERP key (surrounding white space ignored)' -r -F
complete -c mailmerge -n "__fish_mailmerge_using_subcommand bounces" -l config -d 'Config file [default: ./mailmerge.toml if present]' -r -F
complete -c mailmerge -n "__fish_mailmerge_using_subcommand bounces" -l dry-run -d 'Change nothing (no results CSV, journal, suppression list or IMAP watermark): only say what a real run would do with each report'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand bounces" -l json -d 'One JSON object per line (per recipient of each message) instead of a table'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand bounces" -s h -l help -d 'Print help'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand senders" -l clear -d 'Forget what is remembered of this provider (or unknown site): learnt limits and suspensions; today\'s counts stay (a cap stays a cap)' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand senders" -l source -d 'With --clear: only from this source IP' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand senders" -l state -d 'The sender\'s memory: suspensions, learnt limits and daily counts per provider and source IP, shared by every run (SQLite) [default: $XDG_DATA_HOME/mailmerge/ senders.sqlite, else ~/.local/share/...; with --sandbox <--sandbox-dir>.senders.sqlite]' -r -F
complete -c mailmerge -n "__fish_mailmerge_using_subcommand senders" -l now -d 'Read the wall clock as this RFC 3339 instant at start (tests; days and suspensions)' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand senders" -l config -d 'Config file [default: ./mailmerge.toml if present] (uses its state key)' -r -F
complete -c mailmerge -n "__fish_mailmerge_using_subcommand senders" -s h -l help -d 'Print help'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand merge-results" -l list -d 'The list the shards were run on (gives the rows, their order, and the address and values each result row must have)' -r -F
complete -c mailmerge -n "__fish_mailmerge_using_subcommand merge-results" -s o -l output -d 'The merged results CSV' -r -F
complete -c mailmerge -n "__fish_mailmerge_using_subcommand merge-results" -l email-column -d 'Column of LIST holding the recipient address (as given to `run`)' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand merge-results" -s h -l help -d 'Print help'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand report" -s o -l output -d 'The HTML file [default: <RESULTS stem>.html beside it; needed with several files]' -r -F
complete -c mailmerge -n "__fish_mailmerge_using_subcommand report" -l events -d 'The run\'s event stream (`run --events FILE`; one per shard): the timeline then marks every throttling reply and provider state change, not only what the results show' -r -F
complete -c mailmerge -n "__fish_mailmerge_using_subcommand report" -l max-domains -d 'Domains (and providers or sites) listed at most in the tables: those with the most rows' -r
complete -c mailmerge -n "__fish_mailmerge_using_subcommand report" -s h -l help -d 'Print help'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand generate; and not __fish_seen_subcommand_from man completions help" -s h -l help -d 'Print help'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand generate; and not __fish_seen_subcommand_from man completions help" -f -a "man" -d 'Write mailmerge.1 and one page per subcommand (mailmerge-run.1, …) into DIR'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand generate; and not __fish_seen_subcommand_from man completions help" -f -a "completions" -d 'Print the completion script for SHELL on stdout'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand generate; and not __fish_seen_subcommand_from man completions help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand generate; and __fish_seen_subcommand_from man" -s h -l help -d 'Print help'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand generate; and __fish_seen_subcommand_from completions" -s h -l help -d 'Print help'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand generate; and __fish_seen_subcommand_from help" -f -a "man" -d 'Write mailmerge.1 and one page per subcommand (mailmerge-run.1, …) into DIR'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand generate; and __fish_seen_subcommand_from help" -f -a "completions" -d 'Print the completion script for SHELL on stdout'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand generate; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand help; and not __fish_seen_subcommand_from run check check-sender suppress bounces senders merge-results report generate help" -f -a "run" -d 'Render and deliver every row of RECIPIENTS with TEMPLATE; write a results CSV'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand help; and not __fish_seen_subcommand_from run check check-sender suppress bounces senders merge-results report generate help" -f -a "check" -d 'Validate the list, render every message and resolve every domain; print the plan and send nothing. Exits 1 if any row could not be sent. Takes the same options as `run`'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand help; and not __fish_seen_subcommand_from run check check-sender suppress bounces senders merge-results report generate help" -f -a "check-sender" -d 'Check the sender domain\'s DNS (SPF, DKIM, DMARC); print what to publish'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand help; and not __fish_seen_subcommand_from run check check-sender suppress bounces senders merge-results report generate help" -f -a "suppress" -d 'Manage the suppression list: addresses no campaign sends to (docs/list-hygiene.md)'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand help; and not __fish_seen_subcommand_from run check check-sender suppress bounces senders merge-results report generate help" -f -a "bounces" -d 'Read late bounces and complaints (Maildir folders, mbox or .eml files, an IMAP mailbox); mark their rows bounced in the campaign\'s results CSV and suppress the addresses. --dry-run only says what it would do'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand help; and not __fish_seen_subcommand_from run check check-sender suppress bounces senders merge-results report generate help" -f -a "senders" -d 'What is remembered per provider and source IP (learnt limits, suspensions, today\'s counts, warm-up day); clear an entry with --clear'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand help; and not __fish_seen_subcommand_from run check check-sender suppress bounces senders merge-results report generate help" -f -a "merge-results" -d 'Join the results of `run --shard 0/N` … `N-1/N` into one results CSV in the list\'s order. Exits 2, naming the rows, unless every row of LIST appears exactly once, with LIST\'s address and values, in LIST\'s order within each input'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand help; and not __fish_seen_subcommand_from run check check-sender suppress bounces senders merge-results report generate help" -f -a "report" -d 'Write an HTML report of a results CSV (or of a sharded campaign\'s results): totals, providers, domains, why not delivered, a timeline, TLS. One self-contained file'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand help; and not __fish_seen_subcommand_from run check check-sender suppress bounces senders merge-results report generate help" -f -a "generate" -d 'Write the man pages or print shell completions (generated from these definitions)'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand help; and not __fish_seen_subcommand_from run check check-sender suppress bounces senders merge-results report generate help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand help; and __fish_seen_subcommand_from suppress" -f -a "list" -d 'Print every entry as CSV (address, reason, cause, campaign, created)'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand help; and __fish_seen_subcommand_from suppress" -f -a "add" -d 'Suppress addresses, or whole domains written @domain'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand help; and __fish_seen_subcommand_from suppress" -f -a "remove" -d 'Take addresses (or @domains) off the list'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand help; and __fish_seen_subcommand_from suppress" -f -a "import" -d 'Add the addresses of a CSV file, e.g. another tool\'s unsubscribe export. A whole domain only on rows whose `kind` column says `domain`; a line that cannot be used is reported with its number and skipped'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand help; and __fish_seen_subcommand_from suppress" -f -a "export" -d 'Write every entry as CSV to FILE (or stdout when omitted or `-`), formula-like cells defused with a leading apostrophe'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand help; and __fish_seen_subcommand_from generate" -f -a "man" -d 'Write mailmerge.1 and one page per subcommand (mailmerge-run.1, …) into DIR'
complete -c mailmerge -n "__fish_mailmerge_using_subcommand help; and __fish_seen_subcommand_from generate" -f -a "completions" -d 'Print the completion script for SHELL on stdout'
