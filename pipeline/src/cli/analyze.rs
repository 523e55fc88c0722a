//! `kaiabc analyze`: periodogram, cosinor (one or more components, population mean), wavelet
//! transform, trend test and phase response curve.

use anyhow::{bail, Context, Result};
use kaiabc_operators::clock::ClockConfig;
use kaiabc_operators::prc::{phase_response_curve, PrcConfig};
use kaiabc_operators::rhythm::multi_cosinor::{multi_cosinor, MultiCosinorFit};
use kaiabc_operators::rhythm::population::{population_cosinor, PopulationFit};
use kaiabc_operators::rhythm::trend::trend as trend_test;
use kaiabc_operators::rhythm::wavelet::{wavelet_spectrum, WaveletOptions, WaveletSpectrum};
use kaiabc_operators::rhythm::{cosinor as fit_cosinor, LombScargle, PeakSearch};

use super::{CosinorArgs, PeriodogramArgs, PrcArgs, SeriesArgs, TrendArgs, WaveletArgs};
use crate::table::{read_columns, read_grouped};

fn read_series(s: &SeriesArgs) -> Result<(Vec<f64>, Vec<f64>)> {
    let mut cols = read_columns(&s.input, &[&s.time_column, &s.value_column])?;
    let y = cols.values.pop().unwrap_or_default();
    let t = cols.values.pop().unwrap_or_default();
    Ok((t, y))
}

pub fn periodogram(a: &PeriodogramArgs) -> Result<()> {
    let (t, y) = read_series(&a.series)?;
    let shown = a.series.input.display();
    let ls = LombScargle::new(&t, &y)
        .with_context(|| format!("{shown}: cannot compute a periodogram"))?;
    let search = PeakSearch::new(a.min_period_hours, a.max_period_hours)
        .with_samples_per_peak(a.samples_per_peak);
    let peak = ls
        .peak(&search)
        .with_context(|| format!("{shown}: peak search failed"))?;
    if a.series.json {
        println!("{}", serde_json::to_string_pretty(&peak)?);
    } else {
        println!("period_hours             {:.4}", peak.period_hours);
        println!("power                    {:.6}", peak.power);
        println!(
            "false_alarm_probability  {:.3e}",
            peak.false_alarm_probability
        );
        println!("n_points                 {}", peak.n_points);
        println!("n_skipped                {}", peak.n_skipped);
        println!(
            "search                   {}–{} h",
            a.min_period_hours, a.max_period_hours
        );
    }
    Ok(())
}

pub fn cosinor(a: &CosinorArgs) -> Result<()> {
    let columns = [a.time_column.as_str(), a.value_column.as_str()];
    if a.population {
        let mut members = Vec::new();
        for path in &a.input {
            match &a.group_column {
                Some(group) => {
                    for (name, mut c) in read_grouped(path, group, &columns)? {
                        let y = c.values.pop().unwrap_or_default();
                        let t = c.values.pop().unwrap_or_default();
                        members.push((name, t, y));
                    }
                }
                None => {
                    let mut c = read_columns(path, &columns)?;
                    let y = c.values.pop().unwrap_or_default();
                    let t = c.values.pop().unwrap_or_default();
                    let name = path.file_stem().map_or_else(
                        || path.display().to_string(),
                        |s| s.to_string_lossy().into(),
                    );
                    members.push((name, t, y));
                }
            }
        }
        let periods = periods_of(a);
        let fit =
            population_cosinor(&members, &periods).context("population-mean cosinor failed")?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&fit)?);
        } else {
            print_population(&fit);
        }
        return Ok(());
    }
    let [path] = a.input.as_slice() else {
        bail!("give one --input for a single fit, or --population for several");
    };
    let mut cols = read_columns(path, &columns)?;
    let y = cols.values.pop().unwrap_or_default();
    let t = cols.values.pop().unwrap_or_default();
    let shown = path.display();
    if a.components.is_empty() {
        let fit = fit_cosinor(&t, &y, a.period_hours)
            .with_context(|| format!("{shown}: cosinor fit failed"))?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&fit)?);
        } else {
            print_single(&fit);
        }
        return Ok(());
    }
    let fit = multi_cosinor(&t, &y, &a.components)
        .with_context(|| format!("{shown}: multi-component cosinor failed"))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&fit)?);
    } else {
        print_multi(&fit);
    }
    Ok(())
}

fn periods_of(a: &CosinorArgs) -> Vec<f64> {
    if a.components.is_empty() {
        vec![a.period_hours]
    } else {
        a.components.clone()
    }
}

fn print_single(fit: &kaiabc_operators::rhythm::CosinorFit) {
    println!("period_hours     {:.4}", fit.period_hours);
    println!(
        "mesor            {:.6}  95% CI [{:.6}, {:.6}]",
        fit.mesor, fit.mesor_ci[0], fit.mesor_ci[1]
    );
    println!(
        "amplitude        {:.6}  95% CI [{:.6}, {:.6}]",
        fit.amplitude, fit.amplitude_ci[0], fit.amplitude_ci[1]
    );
    println!(
        "acrophase_rad    {:.6}  95% CI [{:.6}, {:.6}]",
        fit.acrophase_rad, fit.acrophase_ci[0], fit.acrophase_ci[1]
    );
    println!("peak_time_hours  {:.4}", fit.peak_time_hours);
    println!(
        "p_value          {:.3e}  (F = {:.4} on 2, {} df)",
        fit.p_value,
        fit.f_statistic,
        fit.n_points.saturating_sub(3)
    );
    println!("r_squared        {:.4}", fit.r_squared);
    println!(
        "n_points         {}  (skipped {})",
        fit.n_points, fit.n_skipped
    );
}

fn print_multi(fit: &MultiCosinorFit) {
    println!(
        "mesor              {:.6}  95% CI [{:.6}, {:.6}]",
        fit.mesor, fit.mesor_ci[0], fit.mesor_ci[1]
    );
    println!(
        "p_value            {:.3e}  (F = {:.4} on {}, {} df)",
        fit.p_value,
        fit.f_statistic,
        2 * fit.components.len(),
        fit.df_resid
    );
    println!("r_squared          {:.4}", fit.r_squared);
    println!("overall_amplitude  {:.6}", fit.overall_amplitude);
    println!("orthophase_hours   {:.4}", fit.orthophase_hours);
    println!("bathyphase_hours   {:.4}", fit.bathyphase_hours);
    println!(
        "n_points           {}  (skipped {})",
        fit.n_points, fit.n_skipped
    );
    println!("period_hours,amplitude,amplitude_lo,amplitude_hi,acrophase_rad,acrophase_lo,acrophase_hi,peak_time_hours,p_value");
    for c in &fit.components {
        println!(
            "{},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.4},{:.3e}",
            c.period_hours,
            c.amplitude,
            c.amplitude_ci[0],
            c.amplitude_ci[1],
            c.acrophase_rad,
            c.acrophase_ci[0],
            c.acrophase_ci[1],
            c.peak_time_hours,
            c.p_value
        );
    }
}

fn print_population(fit: &PopulationFit) {
    println!("members            {}", fit.members);
    println!(
        "mesor              {:.6}  95% CI [{:.6}, {:.6}]",
        fit.mesor, fit.mesor_ci[0], fit.mesor_ci[1]
    );
    println!("period_hours,amplitude,amplitude_lo,amplitude_hi,acrophase_rad,acrophase_lo,acrophase_hi,p_value");
    for c in &fit.components {
        let (lo, hi) = c.acrophase_ci.map_or(
            ("undetermined".to_string(), "undetermined".to_string()),
            |[a, b]| (format!("{a:.6}"), format!("{b:.6}")),
        );
        println!(
            "{},{:.6},{:.6},{:.6},{:.6},{lo},{hi},{:.3e}",
            c.period_hours,
            c.amplitude,
            c.amplitude_ci[0],
            c.amplitude_ci[1],
            c.acrophase_rad,
            c.p_value
        );
    }
}

pub fn wavelet(a: &WaveletArgs) -> Result<()> {
    let (t, y) = read_series(&a.series)?;
    let shown = a.series.input.display();
    let w = wavelet_spectrum(
        &t,
        &y,
        &WaveletOptions {
            min_period_hours: a.min_period_hours,
            max_period_hours: a.max_period_hours,
            dj: a.dj,
            dt_hours: a.dt_hours,
            significance_level: a.significance_level,
        },
    )
    .with_context(|| format!("{shown}: wavelet transform failed"))?;
    if a.series.json {
        println!("{}", serde_json::to_string(&w)?);
    } else {
        print_wavelet(&w);
    }
    Ok(())
}

fn print_wavelet(w: &WaveletSpectrum) {
    println!(
        "grid             {} samples every {:.4} h ({} gaps)",
        w.times_hours.len(),
        w.dt_hours,
        w.n_gaps
    );
    println!(
        "red noise        lag-1 autocorrelation {:.4} ({})",
        w.lag1_autocorrelation, w.red_noise_estimator
    );
    println!("n_points         {}  (skipped {})", w.n_points, w.n_skipped);
    println!(
        "# global wavelet spectrum (power in units of the variance; significant = above the {}% red-noise level)",
        w.significance_level * 100.0
    );
    println!("period_hours,global_power,global_significance,significant");
    for ((p, g), s) in w
        .periods_hours
        .iter()
        .zip(&w.global_power)
        .zip(&w.global_significance)
    {
        println!("{p:.4},{g:.6},{s:.6},{}", g > s);
    }
}

pub fn trend(a: &TrendArgs) -> Result<()> {
    let mut cols = read_columns(&a.input, &[&a.time_column, &a.value_column])?;
    let y = cols.values.pop().unwrap_or_default();
    let x = cols.values.pop().unwrap_or_default();
    let Some(t) = trend_test(&x, &y, a.max_lags) else {
        bail!(
            "{}: a trend needs at least 4 finite rows with more than one distinct time",
            a.input.display()
        );
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&t)?);
    } else {
        let h = &t.hac;
        println!("n                  {}", t.n);
        println!(
            "slope              {:.6e}  95% CI [{:.6e}, {:.6e}]  (HAC, {} lags)",
            h.slope, h.slope_ci[0], h.slope_ci[1], h.max_lags
        );
        println!("p_value            {:.3e}", h.p_value);
        let m = &t.mann_kendall;
        println!("sen_slope          {:.6e}", m.sen_slope);
        println!(
            "mann_kendall       tau {:.4}, z {:.4}, p {:.3e}",
            m.tau, m.z, m.p_value
        );
    }
    Ok(())
}

pub fn prc(a: &PrcArgs) -> Result<()> {
    let cfg = ClockConfig {
        reference_temperature_k: a.temperature_c + 273.15,
        ..a.model.config(a.etf)
    };
    let prc = phase_response_curve(
        &cfg,
        &PrcConfig {
            delta_k: a.delta_k,
            duration_minutes: a.duration_minutes,
            resolution: a.resolution,
            kaia_factor: a.kaia_factor,
            ..Default::default()
        },
    )
    .context("cannot compute the phase response curve")?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&prc)?);
    } else {
        println!(
            "# PRC: {:+} K and KaiA ×{} for {} min at {} K, free-running period {:.3} h; time-rescaling shift {:+.4} h",
            a.delta_k, a.kaia_factor, a.duration_minutes, prc.base_temperature_k, prc.period_hours, prc.time_rescaling_shift_hours
        );
        println!("circadian_time,phase_shift_hours,phase_shift_ct_hours");
        for p in &prc.points {
            println!(
                "{:.3},{:.5},{:.5}",
                p.circadian_time, p.phase_shift_hours, p.phase_shift_ct_hours
            );
        }
    }
    Ok(())
}
