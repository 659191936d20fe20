//! Training the logistic model and evaluating it on the held-out split.
//!
//! The trainer fixes the model's *structure* from a template (feature rows without weights, by
//! default [`default_template`]) and learns the weights: L2-regularised logistic regression,
//! full-batch Adam, a fixed number of epochs, every step deterministic.
//!
//! Examples come from the labelled UA data ([`Dataset`]) in two forms: UA-only records (the
//! `headers_unknown` feature fires, header features do not) and whole synthetic requests written by
//! the seeded [`Generator`]: browsers with their UA's header set, crawlers with crawler header
//! profiles, spoofed UAs on automation, browser UAs on scrapers' headers, and HTTP libraries and
//! headless Chrome with their own UAs. Human and bot examples carry equal total weight within each
//! form, so neither class nor form dominates.

use std::fmt;

use serde::Serialize;

use crate::dataset::{Dataset, Ja4Capture, UaSource};
use crate::features::FeatureKind;
use crate::model::{FeatureRow, Model, Thresholds};
use crate::request::RequestView;
use crate::synth::{ClientKind, Generator, SyntheticRequest};

/// The feature rows of the shipped model, weights zero. Only generic signals: User-Agent
/// structure, the automation-library and crawler tokens named in the module docs, header presence,
/// values and order, consistency between UA and client hints / fetch metadata, HTTP version.
pub fn default_template() -> Vec<FeatureRow> {
    use FeatureKind as K;
    let mut rows = vec![
        FeatureRow::new("headers_unknown", K::HeadersUnknown),
        FeatureRow::new("ua_missing", K::UaMissing),
        FeatureRow::new("ua_malformed", K::UaMalformed),
        FeatureRow::new("ua_url", K::UaUrl),
        FeatureRow::new("ua_no_version", K::UaNoVersion),
        FeatureRow::new("ua_mozilla", K::UaMozilla),
        FeatureRow::new("ua_comment", K::UaComment),
        FeatureRow::new("ua_length_lt_30", K::UaLength).param("max", 30),
        FeatureRow::new("ua_length_30_80", K::UaLength)
            .param("min", 30)
            .param("max", 80),
        FeatureRow::new("ua_length_ge_200", K::UaLength).param("min", 200),
        FeatureRow::new("ua_products_1", K::UaProducts)
            .param("min", 1)
            .param("max", 2),
        FeatureRow::new("ua_products_2", K::UaProducts)
            .param("min", 2)
            .param("max", 3),
        FeatureRow::new("ua_products_3_5", K::UaProducts)
            .param("min", 3)
            .param("max", 6),
        FeatureRow::new("ua_products_ge_6", K::UaProducts).param("min", 6),
        FeatureRow::new("ua_version_implausible", K::UaVersionImplausible),
        FeatureRow::new("ua_os_engine_mismatch", K::UaOsEngineMismatch),
    ];
    // Generic crawler tokens and automation-library tokens (issue #6); no list of bot names.
    for token in [
        "bot",
        "spider",
        "crawl",
        "curl",
        "python",
        "go-http-client",
        "java",
        "httpclient",
        "okhttp",
        "headless",
    ] {
        let name = format!("ua_token_{}", token.replace('-', "_"));
        rows.push(FeatureRow::new(name, K::UaToken).param("token", token));
    }
    for family in ["chrome", "edge", "firefox", "safari", "opera", "samsung"] {
        rows.push(
            FeatureRow::new(format!("ua_browser_{family}"), K::UaBrowser).param("family", family),
        );
    }
    rows.push(
        // 109 is the last Chrome for Windows 7/8.1 and still has human users.
        FeatureRow::new("ua_chrome_below_100", K::UaBrowserVersionBelow)
            .param("family", "chrome")
            .param("major", 100),
    );
    rows.push(
        FeatureRow::new("ua_firefox_below_115", K::UaBrowserVersionBelow)
            .param("family", "firefox")
            .param("major", 115),
    );
    for header in [
        "accept",
        "accept-language",
        "accept-encoding",
        "sec-fetch-site",
        "sec-fetch-mode",
        "sec-fetch-dest",
        "sec-fetch-user",
        "sec-ch-ua",
        "upgrade-insecure-requests",
        "connection",
        "cookie",
        "referer",
        "priority",
    ] {
        rows.push(
            FeatureRow::new(
                format!("header_{}", header.replace('-', "_")),
                K::HeaderPresent,
            )
            .param("header", header),
        );
    }
    rows.extend([
        FeatureRow::new("accept_is_wildcard", K::HeaderEquals)
            .param("header", "accept")
            .param("value", "*/*"),
        FeatureRow::new("accept_has_html", K::HeaderContains)
            .param("header", "accept")
            .param("value", "text/html"),
        FeatureRow::new("accept_encoding_has_br", K::HeaderContains)
            .param("header", "accept-encoding")
            .param("value", "br"),
        FeatureRow::new("accept_encoding_has_zstd", K::HeaderContains)
            .param("header", "accept-encoding")
            .param("value", "zstd"),
        FeatureRow::new("accept_language_has_q", K::HeaderContains)
            .param("header", "accept-language")
            .param("value", ";q="),
        FeatureRow::new("sec_ch_ua_headless", K::HeaderContains)
            .param("header", "sec-ch-ua")
            .param("value", "headless"),
        FeatureRow::new("order_ua_before_accept", K::HeaderBefore)
            .param("first", "user-agent")
            .param("second", "accept"),
        FeatureRow::new("order_accept_encoding_before_accept", K::HeaderBefore)
            .param("first", "accept-encoding")
            .param("second", "accept"),
        FeatureRow::new(
            "order_accept_encoding_before_accept_language",
            K::HeaderBefore,
        )
        .param("first", "accept-encoding")
        .param("second", "accept-language"),
        FeatureRow::new("order_user_agent_before_host", K::HeaderBefore)
            .param("first", "user-agent")
            .param("second", "host"),
        FeatureRow::new("order_sec_ch_ua_before_user_agent", K::HeaderBefore)
            .param("first", "sec-ch-ua")
            .param("second", "user-agent"),
        // One-hot groups leave one level out (4-7 headers, HTTP/2) so that their weights are
        // identifiable against the bias and read as "compared with the usual".
        FeatureRow::new("header_count_lt_4", K::HeaderCount).param("max", 4),
        FeatureRow::new("header_count_ge_8", K::HeaderCount).param("min", 8),
        FeatureRow::new(
            "chromium_without_client_hints",
            K::ChromiumWithoutClientHints,
        ),
        FeatureRow::new(
            "browser_without_fetch_metadata",
            K::BrowserWithoutFetchMetadata,
        ),
        FeatureRow::new("client_hints_mismatch", K::ClientHintsMismatch),
        FeatureRow::new("http_1_0", K::HttpVersion).param("version", "HTTP/1.0"),
        FeatureRow::new("http_1_1", K::HttpVersion).param("version", "HTTP/1.1"),
        FeatureRow::new("http_3", K::HttpVersion).param("version", "HTTP/3"),
    ]);
    rows
}

/// The weight of every `ja4_stack_mismatch_<family>` row: a prior, set here, not learned.
///
/// The labelled data are User-Agent strings without TLS, so no training example carries a JA4
/// and the feature never fires in training: its weight cannot be learned, and, for the same
/// reason, adding it changes no learned weight nor any held-out figure. The value is chosen so
/// that the most browser-like request the other features can describe — a Chrome User-Agent
/// with Chrome's full header set, order and client hints: score 96 over HTTP/1.1, 91 over
/// HTTP/2 — falls to 9 (4) when it arrives over another TLS stack (curl, Python), well inside the
/// "likely automated" band (≤ 29), yet above 1, the usual block threshold: a TLS-intercepting
/// middlebox (a corporate proxy, antivirus) re-originates a real person's connection with its
/// own stack, so the mismatch is a reason to challenge, not proof.
pub const JA4_STACK_MISMATCH_WEIGHT: f64 = -6.0;

/// The `ja4_stack_mismatch` rows for `captures`: one per browser family that has captures, named
/// `ja4_stack_mismatch_<family>`, listing one captured JA4 per distinct TLS stack (in file
/// order), weighted [`JA4_STACK_MISMATCH_WEIGHT`]. Captures of HTTP libraries (no family) add
/// nothing: the rule compares a browser's claim with that browser's stacks. A family or a JA4
/// the model refuses is kept as written, so training reports it by field.
pub fn ja4_priors(captures: &[Ja4Capture]) -> Vec<FeatureRow> {
    let mut families: Vec<(&str, Vec<&str>)> = Vec::new();
    for capture in captures {
        let Some(family) = capture.family.as_deref() else {
            continue;
        };
        let at = match families.iter().position(|(f, _)| *f == family) {
            Some(at) => at,
            None => {
                families.push((family, Vec::new()));
                families.len().saturating_sub(1)
            }
        };
        let Some((_, list)) = families.get_mut(at) else {
            continue;
        };
        let stack = crate::features::Ja4Stack::of(&capture.ja4);
        let known = stack.is_some()
            && list
                .iter()
                .any(|seen| crate::features::Ja4Stack::of(seen) == stack);
        if !known {
            list.push(&capture.ja4);
        }
    }
    families
        .into_iter()
        .map(|(family, ja4)| {
            FeatureRow::new(
                format!("ja4_stack_mismatch_{family}"),
                FeatureKind::Ja4StackMismatch,
            )
            .param("family", family)
            .param("ja4", ja4)
            .weight(JA4_STACK_MISMATCH_WEIGHT)
        })
        .collect()
}

/// Trainer settings. [`Default`] reproduces the shipped model (with
/// [`priors`](Self::priors) from the data directory's `ja4-clients.json`, as `botscore train`
/// sets them).
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// Seed of the split and of the synthetic requests.
    pub seed: u64,
    /// Share of groups held out for evaluation.
    pub holdout: f64,
    /// Full-batch optimisation steps.
    pub epochs: u32,
    /// Adam step size.
    pub learning_rate: f64,
    /// L2 penalty on weights (not the bias); `None` picks one from [`L2_GRID`] on a validation
    /// part of the training split.
    pub l2: Option<f64>,
    /// The written model's `model_version`.
    pub model_version: u64,
    /// The features to learn weights for.
    pub template: Vec<FeatureRow>,
    /// Synthetic requests per real browser UA (other kinds scale from it).
    pub requests_per_browser: u32,
    /// Synthetic requests per library / headless kind.
    pub requests_per_library_kind: u32,
    /// Rows appended to the model after training with their weights as given (not learned):
    /// features the training data cannot exercise, such as [`ja4_priors`].
    pub priors: Vec<FeatureRow>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            seed: 20_251_118,
            holdout: 0.25,
            epochs: 3000,
            learning_rate: 0.05,
            l2: None,
            model_version: 1,
            template: default_template(),
            requests_per_browser: 12,
            requests_per_library_kind: 200,
            priors: Vec::new(),
        }
    }
}

/// One labelled example: a UA-only record or a whole synthetic request.
#[derive(Debug, Clone)]
pub struct Example {
    /// The group it is reported under (`browser`, `crawler`, `spoofed`, or a [`ClientKind`]).
    pub kind: &'static str,
    /// Label.
    pub human: bool,
    /// Weight in metrics (browsers: traffic share; others 1).
    pub traffic_weight: f64,
    /// The User-Agent (`None`: the client sent none).
    pub user_agent: Option<String>,
    /// The request, or `None` for a UA-only record.
    pub request: Option<SyntheticRequest>,
}

impl Example {
    /// Scores the example with `model`.
    ///
    /// # Errors
    /// As [`Model::score`].
    pub fn score(&self, model: &Model) -> Result<crate::BotScore, crate::ScoreError> {
        match &self.request {
            Some(req) => {
                let headers = req.header_map();
                model.score(&RequestView::new(req.version, &headers))
            }
            None => model.score(&RequestView::user_agent_only(self.user_agent.as_deref())),
        }
    }

    fn values(&self, model: &Model, out: &mut Vec<f64>) -> Result<(), crate::ScoreError> {
        match &self.request {
            Some(req) => {
                let headers = req.header_map();
                model.feature_values(&RequestView::new(req.version, &headers), out)
            }
            None => model.feature_values(
                &RequestView::user_agent_only(self.user_agent.as_deref()),
                out,
            ),
        }
    }
}

/// Builds the examples of one split. `held_out` selects the split; the generator's seed differs
/// between splits so evaluation requests are new draws, not copies of training ones.
pub fn examples(data: &Dataset, config: &TrainConfig, held_out: bool) -> Vec<Example> {
    let salt = if held_out {
        0x0005_EED0_E7A1_u64
    } else {
        0x007E_A117_u64
    };
    let mut generator = Generator::new(config.seed ^ salt);
    let mut out = Vec::new();
    let per_browser = config.requests_per_browser;
    for sample in data.samples.iter().filter(|s| s.held_out == held_out) {
        let (kind, full): (&'static str, &[(ClientKind, u32)]) = match sample.source {
            UaSource::Browser => (
                "browser",
                &[(ClientKind::Browser, per_browser), (ClientKind::Scraper, 2)],
            ),
            UaSource::Crawler => ("crawler", &[(ClientKind::Crawler, 2)]),
            UaSource::Spoofed => (
                "spoofed",
                &[(ClientKind::SpoofingBrowser, 1), (ClientKind::Scraper, 1)],
            ),
        };
        out.push(Example {
            kind,
            human: sample.source.is_human(),
            traffic_weight: sample.weight,
            user_agent: Some(sample.user_agent.clone()),
            request: None,
        });
        for &(client, count) in full {
            for _ in 0..count {
                let req = generator.request(client, Some(&sample.user_agent));
                out.push(Example {
                    kind: if client == ClientKind::Scraper && sample.source == UaSource::Browser {
                        "scraper_browser_ua"
                    } else if client == ClientKind::SpoofingBrowser {
                        "spoofing_browser"
                    } else if client == ClientKind::Scraper {
                        "scraper_spoofed_ua"
                    } else {
                        kind
                    },
                    human: client.is_human(),
                    traffic_weight: sample.weight,
                    user_agent: Some(sample.user_agent.clone()),
                    request: Some(req),
                });
            }
        }
    }
    for client in [
        ClientKind::Curl,
        ClientKind::Python,
        ClientKind::Go,
        ClientKind::Java,
        ClientKind::Node,
        ClientKind::HeadlessChrome,
        ClientKind::StealthHeadless,
    ] {
        for i in 0..config.requests_per_library_kind {
            let req = generator.request(client, None);
            let ua = req.user_agent().map(str::to_owned);
            // Every fourth library UA also as a UA-only record, so that mode sees them too.
            if i % 4 == 0 {
                out.push(Example {
                    kind: client.as_str(),
                    human: false,
                    traffic_weight: 1.0,
                    user_agent: ua.clone(),
                    request: None,
                });
            }
            out.push(Example {
                kind: client.as_str(),
                human: false,
                traffic_weight: 1.0,
                user_agent: ua,
                request: Some(req),
            });
        }
    }
    out
}

/// Progress of a training run, for a progress bar.
#[derive(Debug, Clone, Copy)]
pub enum Progress {
    /// Feature extraction: `done` of `total` examples.
    Extract {
        /// Examples done.
        done: usize,
        /// Total examples.
        total: usize,
    },
    /// Optimisation: `epoch` of `epochs`, with the current loss.
    Fit {
        /// Epoch done.
        epoch: u32,
        /// Total epochs.
        epochs: u32,
        /// Weighted log loss plus penalty.
        loss: f64,
    },
}

/// Why training failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// The template is not a valid feature list.
    #[error("feature template invalid: {0}")]
    Template(ravelin_config::Violations),
    /// The learned model failed validation (e.g. weights beyond the bound).
    #[error("trained model invalid: {0}")]
    Model(ravelin_config::Violations),
    /// No examples of one class in the training split.
    #[error("the training split has no {0} examples")]
    NoExamples(&'static str),
    /// Scoring failed.
    #[error(transparent)]
    Score(#[from] crate::ScoreError),
}

/// A trained model with its held-out evaluation.
#[derive(Debug)]
pub struct Trained {
    /// The model.
    pub model: Model,
    /// Its evaluation on the held-out split.
    pub report: Report,
    /// Training examples used.
    pub training_examples: usize,
    /// The L2 penalty used.
    pub l2: f64,
    /// `(l2, validation log loss)` for each candidate, when the penalty was selected.
    pub l2_validation: Vec<(f64, f64)>,
}

/// Trains a model on the training split of `data` and evaluates it on the held-out split.
///
/// # Errors
/// [`TrainError`].
pub fn train(
    data: &Dataset,
    config: &TrainConfig,
    progress: &mut dyn FnMut(Progress),
) -> Result<Trained, TrainError> {
    let template = Model::new(0, 0.0, Thresholds::default(), config.template.clone())
        .prepared()
        .map_err(TrainError::Template)?;
    let dims = config.template.len();
    let (l2, l2_validation) = match config.l2 {
        Some(l2) => (l2, Vec::new()),
        None => select_l2(data, config, &template, progress)?,
    };
    let train_set = examples(data, config, false);
    let rows = design(&template, &train_set, progress)?;
    let theta = fit(&rows, dims, l2, config, progress);
    let (bias, weights) = theta.split_first().unwrap_or((&0.0, &[]));
    let mut features = config.template.clone();
    for (row, w) in features.iter_mut().zip(weights) {
        row.weight = round3(*w);
    }
    features.extend(config.priors.iter().cloned());
    let mut description = format!(
        "logistic regression trained by `botscore train` (seed {}, holdout {}, epochs {}, l2 {l2} chosen on a validation split of the training data) on {} examples: crawler-user-agents (MIT), user-agents (BSD-2-Clause) and seeded synthetic request heads",
        config.seed,
        config.holdout,
        config.epochs,
        rows.len()
    );
    if !config.priors.is_empty() {
        let names: Vec<String> = config
            .priors
            .iter()
            .map(|row| format!("{} = {}", row.name, row.weight))
            .collect();
        description.push_str("; priors, not learned (the data has no TLS): ");
        description.push_str(&names.join(", "));
        description.push_str(", fingerprints captured from real clients (ja4-clients.json)");
    }
    let model = Model::new(
        config.model_version,
        round3(*bias),
        Thresholds::default(),
        features,
    )
    .with_description(description)
    .prepared()
    .map_err(TrainError::Model)?;
    let report = evaluate(&model, data, config)?;
    Ok(Trained {
        model,
        report,
        training_examples: rows.len(),
        l2,
        l2_validation,
    })
}

/// Candidate L2 penalties, strongest first (ties go to the simpler model).
pub const L2_GRID: [f64; 7] = [1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5];

/// Picks the L2 penalty with the lowest balanced log loss on a validation part of the *training*
/// split (20 % of its groups, chosen with a seed derived from `config.seed`). The held-out split is
/// never looked at.
fn select_l2(
    data: &Dataset,
    config: &TrainConfig,
    template: &Model,
    progress: &mut dyn FnMut(Progress),
) -> Result<(f64, Vec<(f64, f64)>), TrainError> {
    let mut inner = Dataset {
        samples: data.train().cloned().collect(),
    };
    for sample in &mut inner.samples {
        sample.held_out =
            crate::dataset::split_unit(config.seed ^ 0x0000_0000_000A_11DA, &sample.group) < 0.2;
    }
    let fit_rows = design(template, &examples(&inner, config, false), progress)?;
    let val_rows = design(template, &examples(&inner, config, true), progress)?;
    let dims = config.template.len();
    let mut losses = Vec::with_capacity(L2_GRID.len());
    let mut best = (f64::INFINITY, L2_GRID[0]);
    for l2 in L2_GRID {
        let theta = fit(&fit_rows, dims, l2, config, progress);
        let loss = data_loss(&val_rows, &theta);
        losses.push((l2, loss));
        if loss < best.0 {
            best = (loss, l2);
        }
    }
    Ok((best.1, losses))
}

/// One design row: indices of the fired features, label (1 human), weight.
type Row = (Vec<u16>, f64, f64);

/// The sparse design matrix of `set` under `template`'s features, with class weights: within
/// each form (UA-only, full request) each class carries a quarter of the total weight.
fn design(
    template: &Model,
    set: &[Example],
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<Row>, TrainError> {
    let mut rows: Vec<Row> = Vec::with_capacity(set.len());
    let mut values = Vec::new();
    let total = set.len();
    for (i, ex) in set.iter().enumerate() {
        ex.values(template, &mut values)?;
        let active: Vec<u16> = values
            .iter()
            .enumerate()
            .filter(|(_, v)| **v > 0.0)
            .filter_map(|(j, _)| u16::try_from(j).ok())
            .collect();
        rows.push((active, if ex.human { 1.0 } else { 0.0 }, 0.0));
        if i % 256 == 0 || i + 1 == total {
            progress(Progress::Extract { done: i + 1, total });
        }
    }
    for ua_only in [true, false] {
        for human in [true, false] {
            let in_bucket = |e: &Example| e.request.is_none() == ua_only && e.human == human;
            let n = set.iter().filter(|e| in_bucket(e)).count();
            if n == 0 {
                return Err(TrainError::NoExamples(if human { "human" } else { "bot" }));
            }
            let w = 0.25 / n as f64;
            for (row, ex) in rows.iter_mut().zip(set) {
                if in_bucket(ex) {
                    row.2 = w;
                }
            }
        }
    }
    Ok(rows)
}

/// Weighted log loss of `theta` (bias first) on `rows`, without the penalty.
fn data_loss(rows: &[Row], theta: &[f64]) -> f64 {
    let (bias, weights) = theta.split_first().unwrap_or((&0.0, &[]));
    rows.iter()
        .map(|(active, y, w)| {
            let z = bias
                + active
                    .iter()
                    .filter_map(|&j| weights.get(usize::from(j)))
                    .sum::<f64>();
            w * log_loss(z, *y)
        })
        .sum()
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Full-batch Adam on the weighted log loss with an L2 penalty. Returns `theta`: the bias, then
/// one weight per feature.
fn fit(
    rows: &[Row],
    dims: usize,
    l2: f64,
    config: &TrainConfig,
    progress: &mut dyn FnMut(Progress),
) -> Vec<f64> {
    let mut theta = vec![0.0f64; dims + 1]; // theta[0] is the bias
    let mut m = vec![0.0f64; dims + 1];
    let mut v = vec![0.0f64; dims + 1];
    let mut grad = vec![0.0f64; dims + 1];
    let (beta1, beta2, eps) = (0.9f64, 0.999f64, 1e-8f64);
    for epoch in 1..=config.epochs {
        grad.iter_mut().for_each(|g| *g = 0.0);
        let mut loss = 0.0;
        let (bias, weights) = theta.split_first().unwrap_or((&0.0, &[]));
        for (active, y, w) in rows {
            let z = bias
                + active
                    .iter()
                    .filter_map(|&j| weights.get(usize::from(j)))
                    .sum::<f64>();
            let p = 1.0 / (1.0 + (-z).exp());
            loss += w * log_loss(z, *y);
            let err = w * (p - y);
            if let Some(g) = grad.first_mut() {
                *g += err;
            }
            for &j in active {
                if let Some(g) = grad.get_mut(usize::from(j) + 1) {
                    *g += err;
                }
            }
        }
        for (g, t) in grad.iter_mut().zip(&theta).skip(1) {
            *g += l2 * t;
            loss += 0.5 * l2 * t * t;
        }
        let bc1 = 1.0 - beta1.powi(i32::try_from(epoch).unwrap_or(i32::MAX));
        let bc2 = 1.0 - beta2.powi(i32::try_from(epoch).unwrap_or(i32::MAX));
        for ((t, g), (mi, vi)) in theta
            .iter_mut()
            .zip(&grad)
            .zip(m.iter_mut().zip(v.iter_mut()))
        {
            *mi = beta1 * *mi + (1.0 - beta1) * g;
            *vi = beta2 * *vi + (1.0 - beta2) * g * g;
            let step = config.learning_rate * (*mi / bc1) / ((*vi / bc2).sqrt() + eps);
            *t = (*t - step).clamp(-crate::MAX_ABS_WEIGHT, crate::MAX_ABS_WEIGHT);
        }
        if epoch % 25 == 0 || epoch == config.epochs {
            progress(Progress::Fit {
                epoch,
                epochs: config.epochs,
                loss,
            });
        }
    }
    theta
}

/// Numerically stable `-log σ(z)` for y = 1, `-log(1 - σ(z))` for y = 0.
fn log_loss(z: f64, y: f64) -> f64 {
    let softplus = |x: f64| if x > 30.0 { x } else { x.exp().ln_1p() };
    if y > 0.5 { softplus(-z) } else { softplus(z) }
}

/// Detection quality on one set of examples. "Positive" is *bot*; a request is flagged when its
/// score is at or below the threshold.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Metrics {
    /// Bot examples.
    pub bots: usize,
    /// Human examples.
    pub humans: usize,
    /// The threshold (score at or below is flagged).
    pub threshold: u8,
    /// Flagged examples that are bots.
    pub precision: f64,
    /// Bots flagged.
    pub recall: f64,
    /// Humans flagged (false-positive rate).
    pub false_positive_rate: f64,
    /// Area under the ROC curve of the score (ties count half).
    pub roc_auc: f64,
    /// Bots flagged at the highest threshold whose false-positive rate is at most 1 %.
    pub recall_at_1pct_fpr: f64,
    /// That threshold (0: none reaches 1 %).
    pub threshold_at_1pct_fpr: u8,
}

/// Computes [`Metrics`] from `(score, human, weight)` triples.
pub fn metrics(scored: &[(u8, bool, f64)], threshold: u8) -> Metrics {
    let mut bot_hist = [0.0f64; 100];
    let mut human_hist = [0.0f64; 100];
    let (mut bots, mut humans) = (0usize, 0usize);
    for &(score, human, w) in scored {
        let hist = if human {
            &mut human_hist
        } else {
            &mut bot_hist
        };
        if let Some(slot) = hist.get_mut(usize::from(score)) {
            *slot += w;
        }
        if human {
            humans += 1;
        } else {
            bots += 1;
        }
    }
    let total_bot: f64 = bot_hist.iter().sum();
    let total_human: f64 = human_hist.iter().sum();
    let at_or_below = |hist: &[f64; 100], t: u8| hist.iter().take(usize::from(t) + 1).sum::<f64>();
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let flagged_bots = at_or_below(&bot_hist, threshold);
    let flagged_humans = at_or_below(&human_hist, threshold);
    // AUC: P(human scores higher than bot) + ½ P(tie).
    let mut auc = 0.0;
    let mut humans_above = total_human;
    for (b, h) in bot_hist.iter().zip(&human_hist) {
        humans_above -= h;
        auc += b * (humans_above + 0.5 * h);
    }
    let mut best = 0u8;
    for t in 1..=99u8 {
        if ratio(at_or_below(&human_hist, t), total_human) <= 0.01 {
            best = t;
        }
    }
    Metrics {
        bots,
        humans,
        threshold,
        precision: ratio(flagged_bots, flagged_bots + flagged_humans),
        recall: ratio(flagged_bots, total_bot),
        false_positive_rate: ratio(flagged_humans, total_human),
        roc_auc: ratio(auc, total_bot * total_human),
        recall_at_1pct_fpr: if best == 0 {
            0.0
        } else {
            ratio(at_or_below(&bot_hist, best), total_bot)
        },
        threshold_at_1pct_fpr: best,
    }
}

/// One row of a per-kind table.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct KindRow {
    /// The kind.
    pub kind: String,
    /// Label.
    pub human: bool,
    /// Examples.
    pub count: usize,
    /// Share flagged at the default threshold (for humans: the false-positive rate).
    pub flagged: f64,
    /// Mean score.
    pub mean_score: f64,
}

/// A held-out evaluation.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    /// The default threshold used (`thresholds.likely_automated`).
    pub threshold: u8,
    /// UA-only records of the data: crawlers and spoofed UAs against browsers, each UA once.
    pub ua_only: Metrics,
    /// UA-only, browsers weighted by their traffic share.
    pub ua_only_traffic_weighted_fpr: f64,
    /// UA-only, per source.
    pub ua_only_kinds: Vec<KindRow>,
    /// Whole synthetic requests of every kind.
    pub full: Metrics,
    /// Whole requests, browsers weighted by traffic share.
    pub full_traffic_weighted_fpr: f64,
    /// Whole requests, per kind.
    pub full_kinds: Vec<KindRow>,
    /// Out-of-assumption cases, not in the headline numbers: held-out browsers over plaintext
    /// HTTP (no client hints, no fetch metadata), which the default model is not trained for.
    pub stress_kinds: Vec<KindRow>,
}

/// Evaluates `model` on the held-out split of `data` (examples drawn as in [`examples`]).
///
/// # Errors
/// As [`Model::score`].
pub fn evaluate(
    model: &Model,
    data: &Dataset,
    config: &TrainConfig,
) -> Result<Report, crate::ScoreError> {
    let held = examples(data, config, true);
    let threshold = model.thresholds().likely_automated;
    let mut ua_only = Vec::new();
    let mut full = Vec::new();
    for ex in &held {
        let score = ex.score(model)?.score().get();
        let target = if ex.request.is_none() {
            &mut ua_only
        } else {
            &mut full
        };
        target.push((ex.kind, ex.human, ex.traffic_weight, score));
    }
    // The UA-only headline compares the data's UAs only (crawlers and spoofed against
    // browsers); synthetic library UAs are in the per-kind table.
    let from_data: Vec<(&str, bool, f64, u8)> = ua_only
        .iter()
        .copied()
        .filter(|(kind, _, _, _)| matches!(*kind, "crawler" | "spoofed" | "browser"))
        .collect();
    let unweighted = |set: &[(&str, bool, f64, u8)]| -> Vec<(u8, bool, f64)> {
        set.iter().map(|&(_, h, _, s)| (s, h, 1.0)).collect()
    };
    let traffic_fpr = |set: &[(&str, bool, f64, u8)]| -> f64 {
        let humans: Vec<(u8, bool, f64)> = set
            .iter()
            .filter(|(_, h, _, _)| *h)
            .map(|&(_, h, w, s)| (s, h, w))
            .collect();
        metrics(&humans, threshold).false_positive_rate
    };
    // Browsers send client hints and fetch metadata only to secure origins.
    let mut stress = Vec::new();
    let mut generator = Generator::new(config.seed ^ 0x0000_0000_0057_7E55);
    for sample in data.held_out().filter(|s| s.source == UaSource::Browser) {
        let mut req = generator.request(ClientKind::Browser, Some(&sample.user_agent));
        req.headers.retain(|(name, _)| {
            !name.starts_with("sec-ch-") && !name.starts_with("sec-fetch-") && name != "priority"
        });
        let headers = req.header_map();
        let score = model
            .score(&RequestView::new(req.version, &headers))?
            .score()
            .get();
        stress.push(("browser_plain_http", true, sample.weight, score));
    }
    Ok(Report {
        stress_kinds: kind_rows(&stress, threshold),
        threshold,
        ua_only: metrics(&unweighted(&from_data), threshold),
        ua_only_traffic_weighted_fpr: traffic_fpr(&ua_only),
        ua_only_kinds: kind_rows(&ua_only, threshold),
        full: metrics(&unweighted(&full), threshold),
        full_traffic_weighted_fpr: traffic_fpr(&full),
        full_kinds: kind_rows(&full, threshold),
    })
}

fn kind_rows(set: &[(&str, bool, f64, u8)], threshold: u8) -> Vec<KindRow> {
    let mut kinds: Vec<(&str, bool)> = Vec::new();
    for &(kind, human, _, _) in set {
        if !kinds.contains(&(kind, human)) {
            kinds.push((kind, human));
        }
    }
    kinds
        .into_iter()
        .map(|(kind, human)| {
            let scores: Vec<u8> = set
                .iter()
                .filter(|(k, h, _, _)| *k == kind && *h == human)
                .map(|&(_, _, _, s)| s)
                .collect();
            let n = scores.len().max(1) as f64;
            KindRow {
                kind: kind.to_owned(),
                human,
                count: scores.len(),
                flagged: scores.iter().filter(|s| **s <= threshold).count() as f64 / n,
                mean_score: scores.iter().map(|s| f64::from(*s)).sum::<f64>() / n,
            }
        })
        .collect()
}

impl fmt::Display for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bots {} / humans {}; at score <= {}: precision {:.3}, recall {:.3}, FPR {:.3}; ROC AUC {:.3}; recall at 1% FPR {:.3} (score <= {})",
            self.bots,
            self.humans,
            self.threshold,
            self.precision,
            self.recall,
            self.false_positive_rate,
            self.roc_auc,
            self.recall_at_1pct_fpr,
            self.threshold_at_1pct_fpr
        )
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "UA-only (held-out UAs): {}", self.ua_only)?;
        writeln!(
            f,
            "  browser FPR weighted by traffic: {:.4}",
            self.ua_only_traffic_weighted_fpr
        )?;
        write_kinds(f, &self.ua_only_kinds, self.threshold)?;
        writeln!(f, "Full synthetic requests (held-out UAs): {}", self.full)?;
        writeln!(
            f,
            "  browser FPR weighted by traffic: {:.4}",
            self.full_traffic_weighted_fpr
        )?;
        write_kinds(f, &self.full_kinds, self.threshold)?;
        writeln!(
            f,
            "Outside the model's assumptions (not in the numbers above):"
        )?;
        write_kinds(f, &self.stress_kinds, self.threshold)
    }
}

fn write_kinds(f: &mut fmt::Formatter<'_>, rows: &[KindRow], threshold: u8) -> fmt::Result {
    writeln!(
        f,
        "  | kind | label | n | flagged (score <= {threshold}) | mean score |"
    )?;
    writeln!(f, "  |---|---|---:|---:|---:|")?;
    for r in rows {
        writeln!(
            f,
            "  | {} | {} | {} | {:.3} | {:.1} |",
            r.kind,
            if r.human { "human" } else { "bot" },
            r.count,
            r.flagged,
            r.mean_score
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_match_hand_computed_values() {
        // Bots at 1, 10, 50; humans at 40, 90, 95, 99.
        let scored = [
            (1, false, 1.0),
            (10, false, 1.0),
            (50, false, 1.0),
            (40, true, 1.0),
            (90, true, 1.0),
            (95, true, 1.0),
            (99, true, 1.0),
        ];
        let m = metrics(&scored, 29);
        assert_eq!((m.bots, m.humans), (3, 4));
        assert!((m.recall - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(m.precision, 1.0);
        assert_eq!(m.false_positive_rate, 0.0);
        // Pairs (bot, human) ordered correctly: 1,10 beat all 4; 50 beats 3 of 4 → 11/12.
        assert!((m.roc_auc - 11.0 / 12.0).abs() < 1e-12);
        // Highest threshold with no human flagged: 39 → recall 2/3.
        assert_eq!(m.threshold_at_1pct_fpr, 39);
        assert!((m.recall_at_1pct_fpr - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn ties_count_half() {
        let m = metrics(&[(50, false, 1.0), (50, true, 1.0)], 29);
        assert!((m.roc_auc - 0.5).abs() < 1e-12);
    }

    #[test]
    fn default_template_is_valid_and_generic() {
        let model = Model::new(1, 0.0, Thresholds::default(), default_template()).prepared();
        assert!(model.is_ok(), "{model:?}");
        assert!(default_template().len() < 100);
    }
}
