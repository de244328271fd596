"""scaimind/gateway"""
