//! `kaiabc analyze`: periodogram, cosinor and phase response curve.

use anyhow::{Context, Result};
use kaiabc_operators::clock::ClockConfig;
use kaiabc_operators::prc::{phase_response_curve, PrcConfig};
use kaiabc_operators::rhythm::{cosinor as fit_cosinor, LombScargle, PeakSearch};

use super::{CosinorArgs, PeriodogramArgs, PrcArgs, SeriesArgs};
use crate::table::read_columns;

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
    let (t, y) = read_series(&a.series)?;
    let shown = a.series.input.display();
    let fit = fit_cosinor(&t, &y, a.period_hours)
        .with_context(|| format!("{shown}: cosinor fit failed"))?;
    if a.series.json {
        println!("{}", serde_json::to_string_pretty(&fit)?);
    } else {
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
